"""`python -m service`: uvicorn on LATENTSERVE_HOST:LATENTSERVE_PORT, one worker, serving `serving_app()`; the one
place for what a serving process does to itself (torch threads, the collector, the SIGTERM/SIGINT drain); and
`python -m service keys add ...`, which manages the keys file (service.keys). The keys command and a refused setting
answer without importing torch or the server."""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from pydantic import ValidationError

from service.keys import KeyFileError, KeyRing, keys_main
from service.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from service.state import ServiceState


def serving_app(settings: Settings | None = None) -> FastAPI:
    """The app a serving process runs: torch's threads and the collector's thresholds are set now, before any model
    loads, and the app's lifespan adds `serving_process`. (`uvicorn service.app:app` reaches it too.)"""
    from service.app import create_app
    from service.runtime import tune_process

    settings = settings or Settings()
    tune_process(settings.torch_threads)
    return create_app(settings, process=serving_process)


@asynccontextmanager
async def serving_process(state: ServiceState) -> AsyncIterator[None]:
    """While the serving process serves: the heap is frozen after the first load, and SIGTERM/SIGINT drain first."""
    from service.runtime import freeze_heap
    from service.state import drain_on_signals

    state.initial_load.add_done_callback(lambda _: freeze_heap())
    async with drain_on_signals(state):
        yield


def main() -> None:
    if sys.argv[1:2] == ["keys"]:
        keys_main(sys.argv[2:])
        return
    try:
        settings = Settings()
        KeyRing(settings.api_key, settings.api_keys_file)  # a bad key or keys file: one line, before uvicorn starts
    except ValidationError as exc:
        sys.exit("latentserve: " + "; ".join(_setting_error(e) for e in exc.errors()))
    except (KeyFileError, OSError) as exc:
        sys.exit(f"latentserve: LATENTSERVE_API_KEYS_FILE: {exc}")
    import uvicorn

    from service import logs
    from service.device import DeviceError, resolve_device

    logs.configure(settings)
    try:
        resolve_device(settings.device)  # refuse a bad device with one clear line, before uvicorn starts
    except DeviceError as exc:
        sys.exit(f"latentserve: {exc}")
    config = uvicorn.Config(
        "service.app:app",  # built by serving_app() once the socket is bound (service.app's module __getattr__)
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON: uvicorn's loggers go to the root's JSON handler (service.logs) rather than its own text handlers.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,  # the service writes its own access line (LATENTSERVE_LOG_FORMAT=json): no duplicate
        # The peer's own address decides who is loopback (admin with no key configured): no X-Forwarded-For.
        proxy_headers=False,
        # Every accepted request ends within its timeout (504 at the latest), so draining never needs longer.
        timeout_graceful_shutdown=math.ceil(settings.request_timeout_s) + 5,
    )
    # Bound before the app starts: a port in use is one error line and exit status 3, with no start-up or drain
    # lines from an app that never served (uvicorn alone binds after the lifespan has started).
    sock = config.bind_socket()
    uvicorn.Server(config).run(sockets=[sock])


def _setting_error(error: dict) -> str:
    where = "LATENTSERVE_" + "_".join(str(p) for p in error.get("loc", ())).upper()
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return message if message.startswith(where) else f"{where}: {message}"


if __name__ == "__main__":
    main()
