"""``reelrank db ...`` commands and the demo's database step."""

from __future__ import annotations

import typer
from sqlalchemy.engine import make_url

from core.config import get_settings
from platform_services.storage import db


def _url() -> str:
    return get_settings().database_url


def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the configured database up to REVISION (default: the newest)."""
    typer.echo(f"database at revision {db.migrate(_url(), revision)}")


def downgrade(revision: str = typer.Argument(..., help="Target revision, or 'base'.")) -> None:
    """Migrate the configured database down to REVISION ('base' drops every table)."""
    typer.echo(f"database at revision {db.downgrade(_url(), revision)}")


def current() -> None:
    """Print the database's revision and the newest one available."""
    typer.echo(f"current: {db.current_revision(_url()) or '(none)'}  head: {db.head_revision()}")


def register(groups: dict[str, typer.Typer]) -> None:
    for fn in (upgrade, downgrade, current):
        groups["db"].command()(fn)


def demo_step() -> None:
    """Bring the configured database to the newest schema."""
    shown = make_url(_url()).render_as_string(hide_password=True)
    typer.echo(f"database {shown} at revision {db.migrate(_url())}")
