"""``reelrank demo``: what it prints, its argument checks, its child bookkeeping; the
KuaiRand world it builds. (The demo itself runs for minutes: it is verified by hand, see
``docs/SCALING.md`` and the issue notes, never inside the suite.)"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from core.config import Settings
from serving.demo import (
    BATCH_WORKERS,
    CLI,
    Children,
    fit_simulated_users,
    kuairand_dir,
    simulated_users_logs,
    urls,
    wait_api_ready,
    worker_command,
)
from training.datasets.kuairand_world import world_tables


def test_urls_name_the_player_the_docs_mlflow_and_a_working_request() -> None:
    lines = urls("http://127.0.0.1:8141", "http://127.0.0.1:8142", "TOKEN")
    text = "\n".join(lines)
    assert "http://127.0.0.1:8141/web/" in text
    assert "http://127.0.0.1:8141/docs" in text
    assert "http://127.0.0.1:8142" in text
    assert "Authorization: Bearer TOKEN" in text
    assert "http://127.0.0.1:8141/api/v1/feed/for-you?page_size=5" in text


def test_children_stop_all_and_refuse_late_starts(tmp_path) -> None:
    kids = Children()
    p = kids.start([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "a.log")
    assert p is not None and p.poll() is None
    assert kids.stop(timeout_s=10) == []
    assert p.returncode is not None
    assert kids.start([sys.executable, "-c", "pass"], tmp_path / "b.log") is None


@pytest.mark.parametrize("args", [["--data", "kuairand"], ["--data", "movies", "x"],
                                  ["--data", "synth", "/some/path"]])
def test_demo_refuses_bad_data_arguments(args: list[str]) -> None:
    from core.cli import app

    result = CliRunner().invoke(app, ["demo", *args])
    assert result.exit_code == 2
    assert "--data kuairand PATH" in result.output


def test_simulated_users_fit_on_the_kuairand_logs_the_demo_was_given() -> None:
    """``--data kuairand PATH`` fits the simulated users on PATH (the default path is only
    for the synthetic world): a clone elsewhere than beside ``shared/`` must work too."""
    given = Path("/data/elsewhere/kuairand")
    on_logs = Settings(demo_data="kuairand", demo_data_path=given)
    assert kuairand_dir(on_logs) == given
    synth = Settings(demo_kuairand_dir=Path("/k"))
    assert kuairand_dir(synth) == Path("/k")


def test_kuairand_world_makes_creators_users_follows_and_a_recent_clock() -> None:
    ts = pd.to_datetime(["2022-04-25 10:00", "2022-04-30 12:00", "2022-04-29 08:00",
                         "2022-04-30 09:00"], utc=True)
    inter = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 12], "ts": ts,
                          "event": "impression", "followed": [True, False, False, True]})
    items = pd.DataFrame({"item_id": [10, 11, 12, 13], "author_id": [1, 5, 5, 7],
                          "title": None, "duration_ms": 1000,
                          "upload_ts": pd.to_datetime(["2022-04-01"] * 4, utc=True)})
    users = pd.DataFrame({"user_id": [1, 2, 3, 4]})

    class T:  # what kuairand.load gives: tables with to_pandas()
        def __init__(self, f: pd.DataFrame) -> None:
            self.f = f

        def to_pandas(self) -> pd.DataFrame:
            return self.f

    tables = {"interactions": T(inter), "items": T(items), "users": T(users), "history": None}
    out, meta = world_tables(tables, max_users=10)
    offset = meta["creator_offset"]
    assert offset == 4  # above every kept user id, so author 1 is not user 1
    # only the items someone was shown; authors moved above the users
    assert sorted(out["items"]["item_id"]) == [10, 11, 12]
    assert sorted(out["items"]["author_id"].unique()) == [1 + offset, 5 + offset]
    assert set(out["items"]["author_id"]) <= set(out["users"]["user_id"])
    assert {1, 2, 3} <= set(out["users"]["user_id"]) and 4 not in set(out["users"]["user_id"])
    follows = {tuple(r) for r in out["follows"][["user_id", "author_id"]].to_numpy()}
    assert follows == {(1, 1 + offset), (3, 5 + offset)}
    today = datetime.now(UTC).date()
    assert out["interactions"]["ts"].max().date() == today
    assert (out["interactions"]["ts"].max() - out["interactions"]["ts"].min()) == \
        (ts.max() - ts.min())  # whole days moved: the order and gaps stay
    sampled, meta = world_tables(tables, max_users=2, seed=1)
    assert meta["log_users"] == 2 and sampled["interactions"]["user_id"].nunique() == 2


def test_the_demo_command_is_listed() -> None:
    out = subprocess.run([sys.executable, "-c", "from core.cli import main; main()", "demo",
                          "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "kuairand" in out.stdout


def test_simulated_users_are_fitted_before_the_api_starts(tmp_path, monkeypatch) -> None:
    """The fit is a demo step before ``serve`` (in the traffic process it took the cores from
    the first pages); with no logs to fit on, or no visits asked for, it fits nothing."""
    from core.cli import DEMO_STEPS, WORKERS

    names = [name for name, _ in DEMO_STEPS]
    assert names.index("simulator") < names.index("serve")
    assert set(WORKERS) > BATCH_WORKERS
    assert worker_command("transcode")[:3] == ["nice", "-n", "10"]  # Debian has coreutils
    assert worker_command("relay") == [*CLI, "worker", "relay"]  # event workers: not niced
    logs = tmp_path / "kuairand"
    logs.mkdir()
    assert simulated_users_logs(Settings(var_dir=tmp_path, demo_kuairand_dir=logs)) == logs
    assert simulated_users_logs(Settings(var_dir=tmp_path, demo_kuairand_dir=logs,
                                         demo_visits_per_min=0)) is None
    monkeypatch.setenv("REELRANK_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("REELRANK_DEMO_KUAIRAND_DIR", str(tmp_path / "none"))
    from core.config import get_settings

    get_settings.cache_clear()
    try:
        fit_simulated_users()  # no KuaiRand there: nothing to fit, no error
        assert not list(tmp_path.rglob("model.json"))
    finally:
        get_settings.cache_clear()


def test_the_demo_waits_until_every_api_process_is_ready() -> None:
    """``/healthz`` answers once one process is up; ``wait_api_ready`` reads the summed
    readiness gauge on ``/metrics``, waits for all of them and says how many it saw."""
    import http.server
    import threading

    ready = {"n": 1}

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = (b"# TYPE reelrank_api_processes_ready gauge\n"
                    b"reelrank_api_processes_ready %d.0\n" % ready["n"])
            self.send_response(200 if self.path == "/metrics/" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert wait_api_ready(base, 2, limit_s=1.2) == 1  # gave up: one of two
        assert wait_api_ready(base, 1, limit_s=1.2) == 1
        ready["n"] = 2
        assert wait_api_ready(base, 2, limit_s=1.2) == 2
    finally:
        server.shutdown()
        server.server_close()
    assert wait_api_ready(base, 1, limit_s=1.2) == 0  # nothing answers there any more
