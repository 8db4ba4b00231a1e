"""`create_app(settings)`: the FastAPI app, its middlewares and the lifespan that loads, warms and drains.

Building the app loads nothing; models load in the lifespan (in the background: /readyz says when they are warm).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import docs, errors, oip, oip_triton, pages, routes
from service.auth import AuthMiddleware, declare_bearer
from service.limits import BodyLimitMiddleware
from service.metrics import MetricsMiddleware
from service.oip_errors import ProtocolErrorMiddleware
from service.runtime import freeze_heap, tune_process
from service.settings import Settings
from service.state import ServiceState, hook_signals, unhook_signals

DESCRIPTION = """Probabilistic PCA, an autoencoder and a VAE of MNIST digits, served with dynamic batching.

Choose the model and version with `?model=vae&version=3` on every inference endpoint (defaults: the configured
default model, its highest loaded version). Images go in as JSON (784 numbers in [0, 1], 28 rows of 28, or a base64
28x28 PNG) or as an `application/x-npy` body; `Accept: image/png` or `application/x-npy` changes what comes back.
Every error is JSON: `{"detail": ..., "type": ...}`; under /v2 (the Open Inference Protocol, `<model>-<operation>`
protocol models) it is the protocol's `{"error": ...}`."""


def create_app(settings: Settings | None = None, serving_process: bool = False) -> FastAPI:
    """The app; with `serving_process` (the module's `app`, which `python -m service` and `uvicorn service.app:app`
    serve) its lifespan also tunes the process once, and freezes the heap after the first load. Test apps do not."""
    settings = settings or Settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if serving_process:
            tune_process(settings.torch_threads)
        await state.start()
        if serving_process:
            state.initial_load.add_done_callback(lambda _: freeze_heap())
        previous = hook_signals(state)
        try:
            yield
        finally:
            unhook_signals(previous)
            await state.stop()

    # FastAPI's built-in OpenTelemetry hooks are off: the service exports its own Prometheus metrics, and the hooks'
    # per-request check of the global providers cost about 7% of single-image throughput (measured in-process).
    telemetry = {"tracing": False, "metrics": False, "logs": False}
    # The routes go straight into the app's router: FastAPI's include_router() wraps them in a router of its own
    # whose per-request matching cost 14 us of a single-image /encode (measured in-process). They were built by
    # routes.router, so app.dependency_overrides would not reach them; none of them has dependencies.
    # /docs and /redoc are the service's own (docs.py: no CDN), not FastAPI's. Triton's extensions come before the
    # protocol's routes: GET /v2/models/stats would otherwise be model metadata of a model named "stats".
    app = FastAPI(title="latentserve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  telemetry=telemetry, docs_url=None, redoc_url=None,
                  routes=routes.router.routes + oip_triton.router.routes + oip.router.routes + docs.router.routes
                  + pages.router.routes)
    app.state.service = state
    app.state.oip_extensions = oip_triton.EXTENSIONS  # listed by GET /v2 (oip.py)
    errors.install(app)
    # Added innermost first: metrics sees everything, auth runs before the body limit, which also frees each
    # request's share of the body budget when it ends.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, budget=state.bodies.budget)
    if settings.api_key:
        app.add_middleware(AuthMiddleware, api_key=settings.api_key)
        declare_bearer(app)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(ProtocolErrorMiddleware)  # outermost: /v2 errors from every layer take the protocol's body
    return app


app = create_app(serving_process=True)
