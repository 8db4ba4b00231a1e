"""The service's configuration: one Settings class read from LATENTSERVE_* environment variables, built once."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; tests pass their own, `create_app()` without one reads the environment."""

    model_config = SettingsConfigDict(env_prefix="LATENTSERVE_", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    artifacts_dir: Path = Path("artifacts")
    # "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    default_model: str = "vae"
    # Where a /sample that asks for a digit and names no model goes, when that model is loaded (else default_model):
    # the conditional VAE draws the digit asked for most reliably (docs/quality.md, "Digits on demand").
    default_digit_model: str = "cvae"
    # Most items per forward pass; requests larger than this are split across passes.
    max_batch_size: int = Field(1024, ge=1, le=65536)
    # Each operation's batch size is the largest warm-up size (1, 2, 4, ... up to max_batch_size) whose pass took at
    # most this long, so that one pass never holds the device's compute thread long; 0 always uses max_batch_size.
    max_pass_ms: float = Field(3.0, ge=0, le=60000)
    # How long the first queued item may wait for company, and only while more work is known to be on its way.
    max_batch_delay_ms: float = Field(2.0, ge=0, le=1000)
    # Bound on the items waiting in each (model, version, operation) queue; beyond it requests get 503. 65,536 lets
    # 64 clients each have a full 1,024-item request queued (about 200 MB of float32 images in an encode queue).
    max_queue_items: int = Field(65536, ge=1)
    request_timeout_s: float = Field(10.0, gt=0)
    max_items_per_request: int = Field(1024, ge=1)
    # Most (images x importance samples) one /score request may ask for (413 above): the work of a request, bounded
    # so that an accepted one finishes well inside request_timeout_s on a small CPU (BENCHMARKS.md, "score").
    max_score_work: int = Field(102_400, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # Unset: no authentication. Set: every endpoint but /healthz, /readyz and /metrics needs `Bearer <key>`.
    api_key: str | None = None
    # Intra-op threads of torch; 0 takes the cores this process may run on.
    torch_threads: int = Field(0, ge=0)
    log_level: str = "info"

    # Slow, vanishing and bulk clients (docs/edges.md).
    # The whole body must arrive within this many seconds of the handler's first read (a total, not per chunk);
    # past it: 408 and the connection closed. It also bounds how long a drain waits for an upload.
    body_timeout_s: float = Field(30.0, gt=0)
    # Bytes of request bodies read, parsed and queued at once; past it new bodies get 503 with Retry-After, and are
    # read and dropped, never kept. One body is always let in. 128 MiB: 8 max-size JSON bodies (~15 MiB each), which
    # take seconds to parse on one core, or 40 float32 .npy bodies of 1,024 images.
    max_inflight_body_bytes: int = Field(128 * 1024 * 1024, ge=1024)
    # Seconds /readyz answers 503 after SIGTERM/SIGINT before the server stops listening, so that load balancers
    # see the drain; requests keep being served meanwhile. A second signal stops at once. 0: no grace.
    drain_grace_s: float = Field(3.0, ge=0, le=300)
