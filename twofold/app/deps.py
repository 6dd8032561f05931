"""FastAPI dependencies: the loaded state and the API-key check (override them in tests
with ``app.dependency_overrides``)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from twofold.app.errors import Unauthorized
from twofold.app.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.twofold
    return state


State = Annotated[AppState, Depends(get_state)]


def require_api_key(request: Request, state: State) -> None:
    """``Authorization: Bearer <key>`` when the service has a key; compared in constant time."""
    if state.settings.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the API key as `Authorization: Bearer <key>`")
    expected = state.settings.api_key.get_secret_value().encode()
    if not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized("the API key is not valid")
