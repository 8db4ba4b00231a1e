"""`python -m service`: uvicorn on LATENTSERVE_HOST:LATENTSERVE_PORT, one worker, serving service.app:app."""

from __future__ import annotations

import logging
import math
import sys

import uvicorn

from service.device import DeviceError, resolve_device
from service.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        resolve_device(settings.device)  # refuse a bad device with one clear line, before uvicorn starts
    except DeviceError as exc:
        sys.exit(f"latentserve: {exc}")
    config = uvicorn.Config(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # per-request logging costs throughput; /metrics counts every request instead
        # Every accepted request ends within its timeout (504 at the latest), so draining never needs longer.
        timeout_graceful_shutdown=math.ceil(settings.request_timeout_s) + 5,
    )
    # Bound before the app starts: a port in use is one error line and exit status 3, with no start-up or drain
    # lines from an app that never served (uvicorn alone binds after the lifespan has started).
    sock = config.bind_socket()
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
