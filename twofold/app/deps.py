"""FastAPI dependencies: the loaded state and the API-key check (override them in tests
with ``app.dependency_overrides``).

They are ``async def`` because they never block: FastAPI runs a plain ``def``
dependency on its thread pool, and two such hand-offs per request (there and back,
each a thread wake-up) were a measurable part of a search's HTTP overhead on a busy
machine."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from twofold.app.errors import Unauthorized
from twofold.app.state import AppState, Startup


async def get_state(request: Request) -> AppState:
    """The loaded state; ``NotReady`` (503) while the collections load."""
    startup: Startup = request.app.state.startup
    return startup.require()


State = Annotated[AppState, Depends(get_state)]


def _bearer(request: Request, what: str) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(f"send the {what} as `Authorization: Bearer <key>`")
    return token.strip()


async def require_api_key(request: Request, state: State) -> None:
    """``Authorization: Bearer <key>`` when the service has a key; compared in constant time."""
    if state.settings.api_key is None:
        return
    expected = state.settings.api_key.get_secret_value().encode()
    if not hmac.compare_digest(_bearer(request, "API key").encode(), expected):
        raise Unauthorized("the API key is not valid")


async def require_admin_key(request: Request, state: State) -> None:
    """``Authorization: Bearer <admin key>``: the admin key only (the search key is not
    one). ``create_app`` registers admin routes only when an admin key is set."""
    if state.settings.admin_key is None:  # pragma: no cover - routes are off then
        raise Unauthorized("admin routes are off: the service has no TWOFOLD_ADMIN_KEY")
    expected = state.settings.admin_key.get_secret_value().encode()
    if not hmac.compare_digest(_bearer(request, "admin key").encode(), expected):
        raise Unauthorized("the admin key is not valid")
