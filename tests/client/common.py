"""What the client's tests share: the live server's settings (tests/client/conftest.py starts it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

API_KEY = "client-test-key"
MAX_ITEMS = 64  # the server's per-request limit: splitting shows with small inputs


@dataclass(frozen=True)
class Live:
    url: str
    artifacts: Path
    log: Path
