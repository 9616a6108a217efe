"""Auth on SQLite and PostgreSQL: argon2 logins, rotating refresh tokens with reuse detection,
roles, strict token parsing, and login failures that do not tell who has an account."""

from __future__ import annotations

import time
from types import SimpleNamespace

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from core.config import Settings
from platform_services.auth import issue_token
from platform_services.storage.models import Role, User
from platform_services.storage.social_models import RefreshToken
from tests.serving.social.conftest import PASSWORD, make_account, sessions_of

ME = "/api/v1/users/me"


def _refresh(api: TestClient, token: str):  # noqa: ANN202 - a response
    return api.post("/api/v1/auth/refresh", json={"refresh_token": token})


def test_passwords_are_argon2_and_usernames_case_insensitive(api: TestClient) -> None:
    a = make_account(api, "Alice")
    with sessions_of(api)() as s:
        assert s.get(User, a.id).password_hash.startswith("$argon2id$")
    dup = {"username": "alice", "email": "other@example.com", "password": PASSWORD}
    assert api.post("/api/v1/auth/register", json=dup).status_code == 409
    dup = {"username": "other", "email": "ALICE@example.com", "password": PASSWORD}
    assert api.post("/api/v1/auth/register", json=dup).status_code == 409
    r = api.post("/api/v1/auth/token", json={"username": "aLiCe", "password": PASSWORD})
    assert r.status_code == 200


def test_blank_and_oversized_inputs_name_the_field(api: TestClient) -> None:
    r = api.post("/api/v1/auth/register",
                 json={"username": "bob", "email": "b@example.com", "password": " " * 8})
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["password"]
    r = api.post("/api/v1/auth/register",
                 json={"username": "b" * 10_000, "email": "b@example.com", "password": PASSWORD})
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["username"]
    r = api.post("/api/v1/auth/register",
                 json={"username": "x'; DROP TABLE users;--", "email": "c@example.com",
                       "password": PASSWORD})
    assert r.status_code == 422  # not a legal username; and the table is still there:
    make_account(api, "carol")


def test_a_body_that_is_not_a_json_object_is_named_once(api: TestClient) -> None:
    """A form post (OAuth2's habit) or a JSON list gets one error naming the body."""
    for kwargs in ({"data": {"username": "ann", "password": PASSWORD}}, {"json": ["ann"]}):
        r = api.post("/api/v1/auth/token", **kwargs)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["fields"] == [
            {"field": "body", "in": "body", "message": "the body must be a JSON object"}]
        assert r.json()["error"]["message"] == "invalid body"
    r = api.post("/api/v1/auth/token")
    assert r.status_code == 422 and [f["field"] for f in r.json()["error"]["fields"]] == ["body"]


def test_a_body_that_is_not_json_is_named_with_where_parsing_failed(api: TestClient) -> None:
    r = api.post("/api/v1/auth/token", content=b'{"username": ',
                 headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"] == [
        {"field": "body", "in": "body", "message": "not valid JSON (at character 13)"}]
    assert r.json()["error"]["message"] == "invalid body"


def test_login_failures_are_indistinguishable(api: TestClient) -> None:
    make_account(api, "dora")

    def attempt(name: str) -> tuple[int, dict, float]:
        t0 = time.perf_counter()
        r = api.post("/api/v1/auth/token", json={"username": name, "password": "wrong pass"})
        return r.status_code, r.json(), time.perf_counter() - t0

    attempt("dora"), attempt("nobody")  # warm up
    pairs = [(attempt("dora"), attempt("nobody")) for _ in range(9)]  # interleaved: same load
    known, unknown = [k for k, _ in pairs], [u for _, u in pairs]
    assert {(k[0], str(k[1])) for k in known} == {(u[0], str(u[1])) for u in unknown}
    assert known[0][0] == 401
    t_known = sorted(k[2] for k in known)[4]
    t_unknown = sorted(u[2] for u in unknown)[4]
    # Both verify one argon2 hash; without the dummy hash the unknown name took ~40% as long.
    assert 0.6 < t_unknown / t_known < 1.6, (t_known, t_unknown)


def test_access_token_claims(api: TestClient, api_settings: Settings) -> None:
    a = make_account(api, "erin")
    token = a.headers["Authorization"].split()[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["role"] == "user" and claims["exp"] - claims["iat"] == 15 * 60
    assert api_settings.refresh_ttl_s == 7 * 24 * 3600


def test_refresh_rotates_and_reuse_revokes_the_family(api: TestClient) -> None:
    a = make_account(api, "fred")
    r1 = _refresh(api, a.refresh_token)
    assert r1.status_code == 200
    second = r1.json()["refresh_token"]
    assert second != a.refresh_token
    r2 = _refresh(api, second)
    assert r2.status_code == 200
    third = r2.json()["refresh_token"]

    replay = _refresh(api, a.refresh_token)  # the first token, stolen and replayed
    assert replay.status_code == 401 and "reused" in replay.json()["error"]["message"]
    assert _refresh(api, third).status_code == 401, "the whole family is revoked"
    with sessions_of(api)() as s:
        rows = s.scalars(select(RefreshToken).where(RefreshToken.user_id == a.id)).all()
        assert len(rows) == 3 and all(r.revoked_at is not None for r in rows)
        assert all(len(r.token_hash) == 64 and r.token_hash != third for r in rows)

    other = make_account(api, "fred2")  # another login family is untouched
    assert _refresh(api, other.refresh_token).status_code == 200
    assert _refresh(api, "not-a-token").status_code == 401


def test_logout_revokes_the_login(api: TestClient) -> None:
    a = make_account(api, "gina")
    r = api.post("/api/v1/auth/logout", json={"refresh_token": a.refresh_token},
                 headers=a.headers)
    assert r.status_code == 204
    assert _refresh(api, a.refresh_token).status_code == 401
    b = make_account(api, "gina2")
    assert api.post("/api/v1/auth/logout-all", headers=b.headers).status_code == 204
    assert _refresh(api, b.refresh_token).status_code == 401


@pytest.mark.parametrize("sub", [" 5 ", "٥", "5_0", "+5", "05", str(2**63), "1e400", "0", ""])
def test_malformed_subjects_are_401_not_500(api: TestClient, api_settings: Settings,
                                            sub: str) -> None:
    make_account(api, "hank")
    secret = api_settings.jwt_secret.get_secret_value()
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, secret, "HS256")
    r = api.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, (sub, r.text)


def test_user_zero_of_a_loaded_world_is_a_user(api: TestClient, api_settings: Settings
                                               ) -> None:
    """A loaded data set keeps its user ids, which start at 0: that user signs in, is looked
    up and followed like any other (its token's ``sub`` "0" is canonical)."""
    with sessions_of(api)() as s:
        s.add(User(id=0, username="imported0", email="imported0@data.invalid",
                   password_hash="!imported"))
        s.commit()
    token = issue_token(api_settings, 0)
    r = api.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["user_id"] == 0, r.text
    fan = make_account(api, "zed")
    assert api.post("/api/v1/users/0/follow", headers=fan.headers).status_code == 200
    assert api.get("/api/v1/users/0", headers=fan.headers).json()["is_following"] is True


def test_role_in_token_and_database(api: TestClient, api_settings: Settings) -> None:
    mod = make_account(api, "mona", Role.MODERATOR)
    claims = jwt.decode(mod.headers["Authorization"].split()[1],
                        options={"verify_signature": False})
    assert claims["role"] == "moderator"
    forged = issue_token(api_settings, make_account(api, "ivan").id, role="admin")
    # A token saying admin for a user account grants nothing: the lower role counts.
    r = api.put(f"/api/v1/users/{mod.id}/verified", json={"verified": True},
                 headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 403
    bad_role = issue_token(api_settings, mod.id, role="root")
    assert api.get(ME, headers={"Authorization": f"Bearer {bad_role}"}).status_code == 401


def test_a_deleted_users_tokens_stop_working(api: TestClient) -> None:
    a = make_account(api, "jill")
    assert api.get(ME, headers=a.headers).status_code == 200
    with sessions_of(api).begin() as s:
        s.delete(s.get(User, a.id))
    assert api.get(ME, headers=a.headers).status_code == 401
    assert _refresh(api, a.refresh_token).status_code == 401


def test_a_token_decoded_before_still_expires_and_stays_bound_to_its_secret(
        api_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each token's signature is checked once (:func:`platform_services.auth._verified`);
    the cached result must still expire on time and never vouch under another secret."""
    from platform_services import auth

    token = issue_token(api_settings, 7, ttl_s=60)
    assert auth.decode_token(api_settings, token).user_id == 7
    assert auth.decode_token(api_settings, token).user_id == 7  # the cached answer
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    with monkeypatch.context() as m, pytest.raises(auth.AuthError, match="expired"):
        # auth's clock only (not the time module: the fixtures' patches stay as they are),
        # at the second the token expires
        m.setattr(auth, "time", SimpleNamespace(time=lambda: exp))
        auth.decode_token(api_settings, token)
    other = api_settings.model_copy(update={"jwt_secret": SecretStr("another-secret-" * 3)})
    with pytest.raises(auth.AuthError, match="[Ss]ignature"):
        auth.decode_token(other, token)
