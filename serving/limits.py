"""Request limits: the rate-limit dependency every route runs, and the request body cap.

``rate_limited`` (app-wide) counts each request per client IP, per user at the tier of the
token's role when the bearer token is valid, and against the route's own, stricter limit when
it has one (``@route_limit("login")``: login, sign-up, the for-you feed), all in one Redis
round trip. A refused request gets 429 with ``Retry-After`` and the usual JSON error body. The
token is only decoded here, not looked up: the limiter costs a Redis round trip, never a
database query.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings
from platform_services.auth import Claims
from platform_services.ratelimit import RateLimiter
from platform_services.storage.models import Role
from serving.deps import request_claims
from serving.errors import error_body


def _tier(settings: Settings, role: Role) -> str:
    return {Role.USER: settings.rate_limit_user, Role.MODERATOR: settings.rate_limit_moderator,
            Role.ADMIN: settings.rate_limit_admin}[role]


def _client(request: Request) -> tuple[str, Claims | None]:
    """(client IP, the claims of a valid bearer token or ``None``)."""
    ip = request.client.host if request.client else "unknown"
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return ip, None
    claims = request_claims(request, token.strip())
    return ip, claims if isinstance(claims, Claims) else None


async def check(limiter: RateLimiter, rule: str, *key: str) -> None:
    """Count one request against ``rule`` for ``key``; 429 with ``Retry-After`` if over."""
    await check_all(limiter, (rule, key))


async def check_all(limiter: RateLimiter, *checks: tuple[str, tuple[str, ...]]) -> None:
    """Count one request against each ``(rule, key)`` in one Redis round trip; 429 with
    ``Retry-After`` if any is over."""
    decision = await limiter.hit_all(*checks)
    if not decision.allowed:
        raise HTTPException(
            429, f"rate limit of {decision.rule} exceeded; retry in {decision.retry_after_s}s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )


_ROUTE_LIMIT = "__rate_limit_scope__"
F = TypeVar("F", bound=Callable[..., Any])


def route_limit(scope: str) -> Callable[[F], F]:
    """Give a route its own, stricter limit, ``settings.rate_limit_<scope>``, counted per user
    when signed in, else per IP. Put it under the route decorator::

        @router.post("/auth/token")
        @route_limit("login")
        def token(...): ...
    """

    if f"rate_limit_{scope}" not in Settings.model_fields:  # at import, not on a request
        raise ValueError(f"no setting rate_limit_{scope} for the route limit {scope!r}")

    def mark(endpoint: F) -> F:
        setattr(endpoint, _ROUTE_LIMIT, scope)
        return endpoint

    return mark


async def rate_limited(request: Request) -> None:
    """The limits every route has (per IP, and per user at their role's tier) and the route's
    own (:func:`route_limit`): one round trip, where a separate dependency per limit cost one
    each (a cached for-you page made two)."""
    settings: Settings = request.app.state.runtime.settings
    limiter: RateLimiter = request.app.state.rate_limiter
    ip, claims = _client(request)
    checks = [(settings.rate_limit_ip, ("ip", ip))]
    if claims is not None:
        checks.append((_tier(settings, claims.role), ("user", str(claims.user_id))))
    if scope := getattr(request.scope.get("endpoint"), _ROUTE_LIMIT, None):
        who = f"user:{claims.user_id}" if claims is not None else f"ip:{ip}"
        checks.append((getattr(settings, f"rate_limit_{scope}"), (scope, who)))
    await check_all(limiter, *checks)


class UnroutedRateLimit:
    """ASGI middleware: the per-IP limit for what is served outside the API's routes (the web
    player's files, ``/metrics``, the API docs): FastAPI's app-wide dependency never runs for
    mounted apps or its own docs routes, and every route must be limited."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]):
        self.app, self.prefixes = app, prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            request = Request(scope)
            limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
            if limiter is not None:
                settings: Settings = request.app.state.runtime.settings
                rule = settings.rate_limit_ip
                decision = await limiter.hit(rule, "ip", _client(request)[0])
                if not decision.allowed:
                    retry = str(decision.retry_after_s)
                    await _send_error(send, 429, f"rate limit of {rule} exceeded; retry in "
                                      f"{retry}s", [(b"retry-after", retry.encode())])
                    return
        await self.app(scope, receive, send)


async def _send_error(send: Send, status: int, message: str,
                      headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A JSON error response written straight to ASGI (from middleware, before any route)."""
    body = json.dumps(error_body(status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 (by its Content-Length, or
    while it streams when it has none) before any handler reads it. Paths under ``exempt``
    prefixes cap their own bodies (the local blob store's signed upload takes a whole video)."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()):
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI passes an HTTPException through as is
                    raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Send) -> None:
        await _send_error(send, 413, f"request body over {self.max_bytes} bytes")
