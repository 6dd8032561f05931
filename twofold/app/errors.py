"""Domain errors -> HTTP, in one place. Every error body is ``ErrorOut``:
``{"detail": what to change, "code": ..., "request_id": ...}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from twofold.app.state import NotReady, ReloadInProgress
from twofold.app.work import Overloaded
from twofold.core.errors import (
    CollectionError,
    DependencyError,
    InputError,
    ModelError,
    NotFoundError,
    TwofoldError,
    UnknownNameError,
)
from twofold.search.pipeline import DeadlineExceeded

log = logging.getLogger(__name__)


class Unauthorized(Exception):
    """Missing or wrong API key."""


# (exception type, status, code); the first match wins, so subclasses come first.
ERROR_MAP: tuple[tuple[type[Exception], int, str], ...] = (
    (Unauthorized, 401, "unauthorized"),
    (Overloaded, 429, "overloaded"),
    (ReloadInProgress, 409, "reload_in_progress"),
    (NotReady, 503, "not_ready"),
    (DeadlineExceeded, 504, "time_budget_exceeded"),
    (NotFoundError, 404, "not_found"),
    # a name (collection, pipeline, retriever) that matches nothing here: not found
    (UnknownNameError, 404, "unknown_name"),
    (InputError, 400, "bad_request"),
    (CollectionError, 503, "collection_unavailable"),
    (ModelError, 503, "model_unavailable"),
    (DependencyError, 503, "dependency_missing"),
    (TwofoldError, 500, "internal_error"),
)


def request_id(request: Request) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid is not None else None


def error_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "code": code, "request_id": request_id(request)}
    body.update(extra)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, headers=headers or None)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    for kind, status, code in ERROR_MAP:
        if isinstance(exc, kind):
            if status >= 500:
                log.error("%s: %s", code, exc)
            headers = None
            if isinstance(exc, Overloaded):
                headers = {"Retry-After": str(exc.retry_after_s)}
            elif isinstance(exc, NotReady):
                headers = {"Retry-After": "1"}
            return error_response(request, status, code, str(exc), headers)
    raise exc  # pragma: no cover - only registered for the types above


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    errors = [
        {"loc": _loc(tuple(e.get("loc", ()))), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
    return error_response(request, 422, "invalid_request", detail, errors=errors)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        raise exc
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    # e.g. the ``Allow`` header of a 405 (RFC 9110 section 15.5.6)
    headers = dict(exc.headers or {})
    return error_response(request, exc.status_code, code, str(exc.detail), headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error (request %s)", request_id(request))
    return error_response(
        request, 500, "internal_error", "internal error; quote the request_id when reporting it"
    )


def install_error_handlers(app: FastAPI) -> None:
    for kind, _, _ in ERROR_MAP:
        app.add_exception_handler(kind, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
