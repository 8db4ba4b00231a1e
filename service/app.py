"""`create_app(settings)`: the FastAPI app, its middlewares and the lifespan that loads, warms and drains.

Building the app loads nothing and touches nothing process-wide (signals, threads, the collector): those belong to
the serving process (service.__main__). Importing this module builds no app; `service.app:app` (uvicorn's command
line) is the serving process's app, built on first access.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from fastapi import FastAPI

from service import auth, browser, docs, errors, logs, oip, oip_triton, pages, routes, tracing
from service.limits import BodyLimitMiddleware
from service.observe import RequestMiddleware
from service.oip_errors import ProtocolErrorMiddleware
from service.settings import Settings
from service.state import ServiceState

ProcessEffects = Callable[[ServiceState], AbstractAsyncContextManager]

DESCRIPTION = """Probabilistic PCA, an autoencoder and a VAE of MNIST digits, served with dynamic batching.

Choose the model and version with `?model=vae&version=3` on every inference endpoint (defaults: the configured
default model, its default version: the highest loaded, or the one its DEFAULT file pins). Images go in as JSON (784
numbers in [0, 1], 28 rows of 28, or a base64 28x28 PNG) or as an `application/x-npy` body; `Accept: image/png` or
`application/x-npy` changes what comes back.
Every error is JSON: `{"detail": ..., "type": ...}`; under /v2 (the Open Inference Protocol, `<model>-<operation>`
protocol models) it is the protocol's `{"error": ...}`."""


def create_app(settings: Settings | None = None, process: ProcessEffects | None = None) -> FastAPI:
    """The app. `process(state)`, when given, is entered once the state has started and left before it stops: the
    serving process passes its process-wide effects (service.__main__.serving_process); test apps pass none."""
    settings = settings or Settings()
    state = ServiceState(settings)
    access = logs.access_log(settings)
    if process is not None:  # the serving process: OTEL_* variables may turn tracing on (service.tracing)
        tracing.configure_from_environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        try:
            async with process(state) if process else nullcontext():
                yield
        finally:
            await state.stop()
            if access is not None:
                access.flush()  # the last turn's access lines

    # FastAPI's built-in OpenTelemetry hooks are off: the service exports its own Prometheus metrics, and the hooks'
    # per-request check of the global providers cost single-image throughput (BENCHMARKS.md, "Figures behind").
    telemetry = {"tracing": False, "metrics": False, "logs": False}
    # The routes go straight into the app's router: FastAPI's include_router() wraps them in a router of its own
    # whose per-request matching was a measurable share of a single-image /encode (BENCHMARKS.md). They were built by
    # routes.router, so app.dependency_overrides would not reach them; none of them has dependencies.
    # /docs and /redoc are the service's own (docs.py: no CDN), not FastAPI's. Triton's extensions come before the
    # protocol's routes: GET /v2/models/stats would otherwise be model metadata of a model named "stats".
    app = FastAPI(title="latentserve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  telemetry=telemetry, docs_url=None, redoc_url=None,
                  routes=routes.router.routes + oip_triton.router.routes + oip.router.routes + docs.router.routes
                  + pages.router.routes + auth.router.routes)
    app.state.service = state
    app.state.oip_extensions = oip_triton.EXTENSIONS  # listed by GET /v2 (oip.py)
    errors.install(app)
    # Added innermost first: CORS answers preflights before auth, auth runs before the body limit, which also frees
    # each request's share of the body budget when it ends.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, budget=state.bodies.budget)
    auth.install(app, settings)
    browser.install(app, settings)
    app.add_middleware(ProtocolErrorMiddleware)  # /v2 errors from every layer take the protocol's body
    if tracing.tracer is not None:  # OTEL_* variables and the otel extra (service.tracing); nothing otherwise
        app.add_middleware(tracing.TracingMiddleware)
    # Outermost: every response, whoever sent it, carries the request's ID, and every error body and log line has it;
    # the metrics count and time every request, whoever answered it.
    app.add_middleware(RequestMiddleware, metrics=state.metrics, access=access)
    return app


def __getattr__(name: str) -> FastAPI:
    """`service.app:app` for `uvicorn service.app:app` and the benchmarks: the serving process's app, built (with its
    process-wide effects) on first access rather than as a side effect of importing this module."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from service.__main__ import serving_app  # the entry point imports this module: import it only when asked

    globals()["app"] = app = serving_app()
    return app
