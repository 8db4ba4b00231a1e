"""`python -m service`: uvicorn on LATENTSERVE_HOST:LATENTSERVE_PORT, one worker, serving `serving_app()`; and the
one place for what a serving process does to itself (torch threads, the collector, the SIGTERM/SIGINT drain)."""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from service import logs
from service.app import create_app
from service.device import DeviceError, resolve_device
from service.runtime import freeze_heap, tune_process
from service.settings import Settings
from service.state import ServiceState, drain_on_signals


def serving_app(settings: Settings | None = None) -> FastAPI:
    """The app a serving process runs: torch's threads and the collector's thresholds are set now, before any model
    loads, and the app's lifespan adds `serving_process`. (`uvicorn service.app:app` reaches it too.)"""
    settings = settings or Settings()
    tune_process(settings.torch_threads)
    return create_app(settings, process=serving_process)


@asynccontextmanager
async def serving_process(state: ServiceState) -> AsyncIterator[None]:
    """While the serving process serves: the heap is frozen after the first load, and SIGTERM/SIGINT drain first."""
    state.initial_load.add_done_callback(lambda _: freeze_heap())
    async with drain_on_signals(state):
        yield


def main() -> None:
    settings = Settings()
    logs.configure(settings)
    try:
        resolve_device(settings.device)  # refuse a bad device with one clear line, before uvicorn starts
    except DeviceError as exc:
        sys.exit(f"latentserve: {exc}")
    uvicorn.run(
        serving_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON: uvicorn's loggers go to the root's JSON handler (service.logs) rather than its own text handlers.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,  # the service writes its own access line (LATENTSERVE_LOG_FORMAT=json): no duplicate
        # Every accepted request ends within its timeout (504 at the latest), so draining never needs longer.
        timeout_graceful_shutdown=math.ceil(settings.request_timeout_s) + 5,
    )


if __name__ == "__main__":
    main()
