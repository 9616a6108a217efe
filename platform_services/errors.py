"""Errors the platform services raise for a caller's mistake; the API maps each to its status
(:mod:`serving.errors`), so a service never needs to know about HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the caller-facing errors; ``status`` is the HTTP status the API answers."""

    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class NotFound(ServiceError):
    """No such thing, or the caller may not see it (the two are not told apart)."""

    status = 404


class Forbidden(ServiceError):
    """The caller may see it but not change it (not the owner, role too low, blocked)."""

    status = 403


class Invalid(ServiceError):
    """Input the schema allows but the state does not (following oneself, too deep a reply);
    ``field`` names the offending input."""

    status = 422
