"""``reelrank db ...`` commands and the demo's database step."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from core.config import get_settings
from platform_services.storage import db
from platform_services.storage.models import Role


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


def set_role(
    username: Annotated[str, typer.Argument(help="The account (case-insensitive).")],
    role: Annotated[Role, typer.Argument(help="The new role.")],
) -> None:
    """Give an account a role in the database: how the first admin is made (the API's role
    route needs an admin already). The account's next login carries the role in its token."""
    from platform_services import users
    from platform_services.errors import NotFound

    engine = db.make_engine(_url())
    try:
        with db.session_factory(engine).begin() as session:
            user = users.by_username(session, username)
            users.set_role(session, user.id, role)
    except NotFound:
        typer.echo(f"error: username: no account named {username!r}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(f"{username}: {role.value}")


def register(groups: dict[str, typer.Typer]) -> None:
    groups["db"].command("set-role")(set_role)
    for fn in (upgrade, downgrade, current):
        groups["db"].command()(fn)


def demo_step() -> None:
    """Bring the configured database to the newest schema."""
    shown = make_url(_url()).render_as_string(hide_password=True)
    typer.echo(f"database {shown} at revision {db.migrate(_url())}")
