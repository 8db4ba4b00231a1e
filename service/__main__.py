"""`python -m service`: uvicorn on LATENTSERVE_HOST:LATENTSERVE_PORT, one worker, serving service.app:app;
`python -m service keys add ...` manages the keys file (service.keys)."""

from __future__ import annotations

import logging
import math
import sys

from pydantic import ValidationError

from service.keys import KeyFileError, KeyRing, keys_main
from service.settings import Settings


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
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported here: `keys` and a refused setting answer without loading torch and the server.
    import uvicorn

    from service.device import DeviceError, resolve_device

    try:
        resolve_device(settings.device)  # refuse a bad device with one clear line, before uvicorn starts
    except DeviceError as exc:
        sys.exit(f"latentserve: {exc}")
    uvicorn.run(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        # The peer's own address decides who is loopback (admin with no key configured): no X-Forwarded-For.
        proxy_headers=False,  # per-request logging costs throughput; /metrics counts every request instead
        # Every accepted request ends within its timeout (504 at the latest), so draining never needs longer.
        timeout_graceful_shutdown=math.ceil(settings.request_timeout_s) + 5,
    )


def _setting_error(error: dict) -> str:
    where = "LATENTSERVE_" + "_".join(str(p) for p in error.get("loc", ())).upper()
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return message if message.startswith(where) else f"{where}: {message}"


if __name__ == "__main__":
    main()
