"""``create_app(settings)``: the FastAPI service. The lifespan starts loading collections
and models once, on a thread of its own, into ``app.state.twofold`` (an ``AppState``);
routes reach it through ``Depends(get_state)``. The server listens meanwhile:
``/healthz`` answers 200 and ``/readyz`` 503 ``loading`` until the load is done (and
both 503 ``failed`` if it failed), so an orchestrator's probes work during a long
load. ``serve`` runs it under uvicorn in this process (one JVM)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from twofold import __version__
from twofold.app import routes_meta, routes_recommend, routes_search
from twofold.app.deps import require_admin_key, require_api_key
from twofold.app.errors import install_error_handlers
from twofold.app.metrics import Metrics
from twofold.app.middleware import RequestContextMiddleware
from twofold.app.settings import Settings
from twofold.app.state import AppState, Startup, close_state, load_state

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
Loader = Callable[[Settings, Metrics], AppState]


def create_app(settings: Settings, loader: Loader = load_state) -> FastAPI:
    """The service for ``settings``; ``loader`` builds the state (tests may swap it)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        startup = app.state.startup = Startup()
        stopping = threading.Event()
        lock = threading.Lock()

        def load() -> None:
            try:
                state = loader(settings, metrics)
            except Exception as exc:
                log.exception("loading the collections failed")
                startup.error, startup.status = f"{type(exc).__name__}: {exc}", "failed"
                return
            with lock:
                if stopping.is_set():  # shut down while loading: nobody will serve it
                    close_state(state)
                    return
                app.state.twofold = startup.state = state
                startup.status = "ready"
            log.info(
                "serving %s; pipelines %s",
                ", ".join(state.collections),
                {n: list(c.pipelines) for n, c in state.collections.items()},
            )

        threading.Thread(target=load, name="twofold-load", daemon=True).start()
        try:
            yield
        finally:
            with lock:
                stopping.set()
                if startup.state is not None:
                    close_state(startup.state)

    app = FastAPI(
        title="Twofold",
        version=__version__,
        description="Learned sparse + dense retrieval: search, fused and reranked.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics
    )
    auth = [Depends(require_api_key)]
    app.include_router(routes_search.router, dependencies=auth)
    app.include_router(routes_meta.v1, dependencies=auth)
    app.include_router(routes_recommend.router, dependencies=auth)
    if settings.admin_key is not None:  # no admin key: admin routes are off, not open
        app.include_router(routes_meta.admin, dependencies=[Depends(require_admin_key)])
    app.include_router(routes_meta.ops)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service in this process (the JVM must not be forked: one worker)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None)
