"""The admin API and the CLI: who may call it, what a bad definition gets back, the life cycle
of an experiment, and that stopping keeps its exposures."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.cli import app as cli
from core.clock import utcnow
from core.config import Settings
from experiments import store
from experiments.models import Exposure
from tests.experiments.conftest import ADMIN, login

URL = "/api/v1/experiments"


def spec(name: str = "exp-a", **changes: object) -> dict:
    body = {"name": name, "hypothesis": "more exploration keeps users longer",
            "variants": [{"name": "control", "weight": 50},
                         {"name": "explore", "weight": 50, "explore_slots": 0.2,
                          "quotas": {"explore": 0.2}}]}
    return body | changes


def test_only_admins(api: TestClient) -> None:
    assert api.get(URL).status_code == 401
    user = login(api, "someone")
    for method, path in (("get", URL), ("post", URL), ("get", f"{URL}/exp-a"),
                         ("post", f"{URL}/exp-a/start"), ("post", f"{URL}/exp-a/stop")):
        r = api.request(method.upper(), path, headers=user, json=spec())
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    admin = login(api, ADMIN)
    assert api.get(URL, headers=admin).json() == {"experiments": []}


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 40}]}, "variants",
     "sum to 90"),
    ({"primary_metric": "revenue"}, "primary_metric", "unknown metric"),
    ({"guardrail_metrics": ["latency_p99_ms", "nope"]}, "guardrail_metrics", "nope"),
    ({"variants": [{"name": "a", "weight": 50},
                   {"name": "b", "weight": 50, "quotas": {"tiktok": 1}}]},
     "variants.1.quotas", "unknown source"),
    ({"variants": [{"name": "a", "weight": 50},
                   {"name": "b", "weight": 50, "score_weights": {"revenue": 1}}]},
     "variants.1.score_weights", "unknown task"),
    ({"variants": [{"name": "a", "weight": 150}, {"name": "b", "weight": 50}]},
     "variants.0.weight", "100"),
    ({"name": "Bad Name!"}, "name", "pattern"),
    ({"holdout": 100}, "holdout", "less than 100"),
])
def test_bad_definitions_name_the_field(api: TestClient, change: dict, field: str,
                                        words: str) -> None:
    r = api.post(URL, headers=login(api, ADMIN), json=spec(**change))
    assert r.status_code == 422, r.text
    fields = r.json()["error"]["fields"]
    assert any(f["field"] == field and words in f["message"] for f in fields), fields


def test_unknown_alias_and_overlap_name_the_field(api: TestClient,
                                                  exp_settings: Settings) -> None:
    admin = login(api, ADMIN)
    body = spec(variants=[{"name": "control", "weight": 50},
                          {"name": "v2", "weight": 50, "ranker_alias": "challenger"}])
    r = api.post(URL, headers=admin, json=body)
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "variants.1.ranker_alias"
    assert "unknown alias 'challenger'" in r.json()["error"]["message"]
    # Once the registry has it, the same definition is accepted.
    client = MlflowClient(exp_settings.mlflow_tracking_uri)
    client.create_registered_model(exp_settings.ranker_model)
    version = client.create_model_version(exp_settings.ranker_model, "file:///nowhere")
    client.set_registered_model_alias(exp_settings.ranker_model, "challenger", version.version)
    assert api.post(URL, headers=admin, json=body).status_code == 201

    assert api.post(URL, headers=admin, json=spec("first", traffic=60)).status_code == 201
    assert api.post(f"{URL}/first/start", headers=admin).json()["status"] == "running"
    r = api.post(URL, headers=admin, json=spec("second", traffic=50))  # same default layer
    assert r.status_code == 409 and r.json()["error"]["fields"][0]["field"] == "layer"
    assert "overlaps running experiment(s) first" in r.json()["error"]["message"]
    assert api.post(URL, headers=admin, json=spec("second", traffic=40)).status_code == 201
    # Another layer may not vary the same parameters (a user would be in both).
    r = api.post(URL, headers=admin, json=spec("third", layer="other"))
    assert r.status_code == 409 and r.json()["error"]["fields"][0]["field"] == "variants"
    assert api.post(URL, headers=admin, json=spec("first")).status_code == 409  # name taken


def test_life_cycle_and_stopping_keeps_exposures(api: TestClient, sessions) -> None:
    admin = login(api, ADMIN)
    created = api.post(URL, headers=admin, json=spec(holdout=10, population={"regions": ["eu"]}))
    assert created.status_code == 201
    assert created.json()["status"] == "draft" and created.json()["variants"][1][
        "explore_slots"] == 0.2
    started = api.post(f"{URL}/exp-a/start", headers=admin).json()
    assert started["status"] == "running" and started["started_at"]
    assert api.post(f"{URL}/exp-a/start", headers=admin).status_code == 409
    with sessions.begin() as s:
        exp_id = store.get(s, "exp-a").id
        s.add_all(Exposure(event_id=str(uuid.uuid4()), experiment_id=exp_id,
                           variant="control" if i % 2 else "explore", user_id=i,
                           request_id="r", occurred_at=utcnow(), n_items=20)
                  for i in range(10))
    stopped = api.post(f"{URL}/exp-a/stop", headers=admin).json()
    assert stopped["status"] == "stopped"
    assert sum(a["pages"] for a in stopped["exposures"]) == 10
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Exposure)) == 10
    shown = api.get(f"{URL}/exp-a", headers=admin).json()
    assert {a["variant"]: a["users"] for a in shown["exposures"]} == {"control": 5,
                                                                      "explore": 5}
    assert api.get(f"{URL}/nope", headers=admin).status_code == 404
    listed = api.get(URL, headers=admin, params={"status": "stopped"}).json()
    assert [e["name"] for e in listed["experiments"]] == ["exp-a"]
    paths = api.get("/openapi.json").json()["paths"]
    assert {"201", "401", "403", "409", "422"} <= set(paths[URL]["post"]["responses"])
    # Each route documents the errors it can return, no others: a list has no 404 or 409.
    assert not {"404", "409"} & set(paths[URL]["get"]["responses"])
    assert "404" in paths[f"{URL}/{{name}}"]["get"]["responses"]
    assert {"404", "409"} <= set(paths[f"{URL}/{{name}}/start"]["post"]["responses"])


def test_first_admin_is_made_from_the_command_line(api: TestClient) -> None:
    """``reelrank db set-role`` writes the role to the account; the next login's token carries
    it, so the admin API opens; an unknown account is one error line naming the argument."""
    run = CliRunner().invoke
    before = login(api, "ana")
    assert api.get(URL, headers=before).status_code == 403
    done = run(cli, ["db", "set-role", "ANA", "admin"])
    assert done.exit_code == 0 and "ANA: admin" in done.output, done.output
    r = api.post("/api/v1/auth/token", json={"username": "ana", "password": "correct horse"})
    after = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert api.get(URL, headers=after).status_code == 200
    assert api.get(URL, headers=before).status_code == 403  # the old token's claim is "user"
    missing = run(cli, ["db", "set-role", "nobody", "admin"])
    assert missing.exit_code == 2 and "username: no account named 'nobody'" in missing.output
    assert run(cli, ["db", "set-role", "ana", "emperor"]).exit_code == 2


def test_cli_create_start_stop_and_errors(exp_settings: Settings, tmp_path) -> None:
    run = CliRunner().invoke
    empty = run(cli, ["experiment", "list"])  # a new analyst is told how to get one
    assert empty.exit_code == 0 and "no experiments: `reelrank experiment create`" in \
        empty.output, empty.output
    bad = run(cli, ["experiment", "create", "--name", "c1", "--variant", "control=50",
                    "--variant", "t=40,explore=0.3"])
    assert bad.exit_code == 2 and "variants: " in bad.output and "sum to 90" in bad.output
    bad = run(cli, ["experiment", "create", "--name", "c1", "--variant", "control=50",
                    "--variant", "t=50,ranker=nope"])
    assert bad.exit_code == 2 and "variants.1.ranker_alias: unknown alias 'nope'" in bad.output
    path = tmp_path / "exp.yaml"
    path.write_text("name: c1\nhypothesis: h\nvariants:\n  - {name: control, weight: 50}\n"
                    "  - {name: t, weight: 50, explore_slots: 0.3}\n")
    ok = run(cli, ["experiment", "create", str(path)])
    assert ok.exit_code == 0, ok.output
    assert run(cli, ["experiment", "start", "c1"]).exit_code == 0
    listed = run(cli, ["experiment", "list"]).output
    assert "c1" in listed and "running" in listed
    assert '"status": "running"' in run(cli, ["experiment", "show", "c1"]).output
    assert run(cli, ["experiment", "stop", "c1"]).exit_code == 0
    again = run(cli, ["experiment", "stop", "c1"])
    assert again.exit_code == 2 and "status: c1 is stopped" in again.output
