"""``reelrank db ...`` and the demo step, against the test settings' SQLite file."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from core.config import Settings
from platform_services.storage.cli import demo_step
from platform_services.storage.db import current_revision, head_revision


def test_db_commands(settings: Settings) -> None:
    from core.cli import app

    run = CliRunner().invoke
    assert "current: (none)" in run(app, ["db", "current"]).output
    result = run(app, ["db", "upgrade"])
    assert result.exit_code == 0 and f"revision {head_revision()}" in result.output
    assert current_revision(settings.database_url) == head_revision()
    assert run(app, ["db", "downgrade", "base"]).exit_code == 0
    assert current_revision(settings.database_url) is None


def test_demo_step_migrates_to_head(settings: Settings, capsys: pytest.CaptureFixture) -> None:
    demo_step()
    assert current_revision(settings.database_url) == head_revision()
    assert f"at revision {head_revision()}" in capsys.readouterr().out
