"""`python -m service`: uvicorn on LATENTSERVE_HOST:LATENTSERVE_PORT, one worker, serving service.app:app."""

from __future__ import annotations

import logging

import uvicorn

from service.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # per-request logging costs throughput; /metrics counts every request instead
        timeout_graceful_shutdown=None,
    )


if __name__ == "__main__":
    main()
