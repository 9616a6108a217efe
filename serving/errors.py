"""Every error is JSON: ``{"error": {"code", "message", "fields": [...]}}``, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from platform_services.errors import ServiceError

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
    507: "storage_full",
}


_UNPARSABLE_BODY = "There was an error parsing the body"  # fastapi.routing's detail


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldError] | None = None


class ErrorOut(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Malformed request (e.g. a bad cursor).",
    401: "Missing, invalid or expired token / wrong credentials.",
    403: "Not allowed: not the owner, or the role is too low.",
    404: "No such resource, or not visible to the caller.",
    409: "Conflicts with existing state.",
    413: "Request body too large.",
    422: "Invalid input; ``fields`` names each bad field.",
    429: "Rate limited; retry after ``Retry-After`` seconds.",
    503: "A backing service is unavailable; retry after ``Retry-After`` seconds.",
    507: "The blob store is full; nothing was stored.",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for the error statuses a route (or router) can answer."""
    return {s: {"model": ErrorOut, "description": _DESCRIPTIONS[s]} for s in statuses}


def error_body(status: int, message: str, fields: list[dict] | None = None) -> dict:
    body: dict = {"code": _CODES.get(status, "error"), "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


# Errors of the body itself: none sent, or not a JSON object (a form post, a list).
_NOT_AN_OBJECT = ("model_attributes_type", "dict_type")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields: list[dict] = []
        for err in exc.errors():
            where = err["loc"][0] if err["loc"] else "body"
            name = ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path"))
            message = err["msg"]
            # Named "body" when the body itself is wrong; a model validator's rule over the
            # whole object keeps the field "".
            if not name and where == "body" and err["type"] in (*_NOT_AN_OBJECT, "missing"):
                name = "body"
                if err["type"] in _NOT_AN_OBJECT:
                    message = "the body must be a JSON object"
            elif err["type"] == "json_invalid":  # its loc is ("body", <character offset>)
                name, message = "body", f"not valid JSON (at character {err['loc'][-1]})"
            field = {"field": name, "in": where, "message": message}
            if field not in fields:  # a body read by two models fails twice the same way
                fields.append(field)
        names = ", ".join(f["field"] or f["in"] for f in fields)
        return JSONResponse(error_body(422, f"invalid {names}", fields), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
            # FastAPI's answer to a JSON body that is not UTF-8: invalid input like any other
            # malformed body (422 naming ``body``), not an undocumented 400.
            fields = [{"field": "body", "in": "body", "message": "body is not UTF-8 JSON"}]
            return JSONResponse(error_body(422, "invalid body", fields), status_code=422)
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        fields = [{"field": exc.field, "message": exc.message}] if exc.field else None
        return JSONResponse(error_body(exc.status, exc.message, fields),
                            status_code=exc.status)

    @app.exception_handler(OperationalError)
    @app.exception_handler(RedisError)
    async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
        # A backing service that is down or overloaded is a 503 (retry later), not a bug.
        log.warning("dependency unavailable on %s %s: %r", request.method, request.url.path,
                    exc)
        return JSONResponse(error_body(503, "a backing service is unavailable; retry later"),
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(500, "internal error"), status_code=500)
