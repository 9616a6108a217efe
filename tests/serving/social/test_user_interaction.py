"""``GET /videos/{id}``'s ``user_interaction``: the caller's own like and save, as stored."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.serving.social.conftest import make_account, make_video

V1 = "/api/v1"


def _interaction(api: TestClient, headers: dict[str, str], video: int) -> dict:
    r = api.get(f"{V1}/videos/{video}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["user_interaction"]


def test_the_callers_like_and_save_show_on_the_video(api: TestClient) -> None:
    ann, bob = make_account(api, "ann"), make_account(api, "bob")
    video = make_video(api, ann)
    assert _interaction(api, bob.headers, video) == {"liked": False, "saved": False}
    assert api.post(f"{V1}/videos/{video}/like", headers=bob.headers).status_code == 200
    assert _interaction(api, bob.headers, video) == {"liked": True, "saved": False}
    assert api.post(f"{V1}/videos/{video}/save", headers=bob.headers).status_code == 200
    assert _interaction(api, bob.headers, video) == {"liked": True, "saved": True}
    assert _interaction(api, ann.headers, video) == {"liked": False, "saved": False}  # bob's
    assert api.delete(f"{V1}/videos/{video}/like", headers=bob.headers).status_code == 200
    assert _interaction(api, bob.headers, video) == {"liked": False, "saved": True}
