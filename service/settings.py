"""The service's configuration: one Settings class read from LATENTSERVE_* environment variables, built once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.keys import check_single_key


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
    # Unset: no authentication. Set: every endpoint but /healthz, /readyz and /metrics needs `Bearer <key>`; this
    # key has both scopes. Empty, whitespace at either end or non-ASCII: refused at start (it could never match).
    api_key: str | None = None
    # Named keys with scopes and rate limits, one per line (docs/security.md); re-read within 2 s of a change.
    api_keys_file: Path | None = None
    # Empty: /metrics stays open like the probes; "infer" or "admin": with keys configured it needs that scope.
    metrics_scope: Literal["", "infer", "admin"] = ""
    # With no key configured /admin/* answers only loopback clients; true opens it to all (a trusted network only).
    admin_open: bool = False
    # Comma-separated origins whose pages may call the API (CORS), e.g. "https://app.example"; empty: none.
    cors_origins: str = ""
    # Intra-op threads of torch; 0 takes the cores this process may run on.
    torch_threads: int = Field(0, ge=0)
    log_level: str = "info"
    # Seconds between rescans of artifacts_dir, each applied like POST /admin/reload once a new folder has stopped
    # changing (docs/api.md); 0: off, the folder is read at start and on /admin/reload only.
    poll_s: float = Field(0.0, ge=0, le=3600)
    # "text": readable lines, no access log (`make serve`'s default). "json": one JSON object per line on stderr, the
    # service's events and an access line per request, each with its request ID (docs/operating.md).
    log_format: Literal["text", "json"] = "text"

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

    @field_validator("api_key")
    @classmethod
    def _usable_key(cls, value: str | None) -> str | None:
        return value if value is None else check_single_key(value)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
