"""`python -m service`: uvicorn on LATENTSERVE_HOST:LATENTSERVE_PORT, one worker, serving service.app:app."""

from __future__ import annotations

import math
import sys

import uvicorn

from service import logs
from service.device import DeviceError, resolve_device
from service.settings import Settings


def main() -> None:
    settings = Settings()
    logs.configure(settings)
    try:
        resolve_device(settings.device)  # refuse a bad device with one clear line, before uvicorn starts
    except DeviceError as exc:
        sys.exit(f"latentserve: {exc}")
    uvicorn.run(
        "service.app:app",
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
