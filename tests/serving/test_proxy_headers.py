"""X-Forwarded-For is honoured only from the configured proxies (issue 14's rate limits)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from core.config import load_settings
from serving.launch import proxy_options


def _seen_ip(options: dict[str, object], peer: str, forwarded: str) -> str:
    """The client IP an app sees behind uvicorn configured with ``options``."""
    app = FastAPI()

    @app.get("/ip")
    def ip(request: Request) -> str:
        return request.client.host if request.client else ""

    asgi = app
    if options["proxy_headers"]:
        asgi = ProxyHeadersMiddleware(app, trusted_hosts=str(options["forwarded_allow_ips"]))
    with TestClient(asgi, client=(peer, 50000)) as c:
        return c.get("/ip", headers={"X-Forwarded-For": forwarded}).json()


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    options = proxy_options(load_settings())
    assert options == {"proxy_headers": False}
    assert _seen_ip(options, "127.0.0.1", "6.6.6.6") == "127.0.0.1"


@pytest.mark.parametrize(("peer", "seen"), [("10.0.0.5", "6.6.6.6"), ("10.9.9.9", "10.9.9.9")])
def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(peer: str, seen: str) -> None:
    options = proxy_options(load_settings(api_trusted_proxies="10.0.0.0/24"))
    assert options == {"proxy_headers": True, "forwarded_allow_ips": "10.0.0.0/24"}
    assert _seen_ip(options, peer, "6.6.6.6") == seen
