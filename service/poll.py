"""LATENTSERVE_POLL_S: each replica rescans the artifacts folder on that period and applies what changed through
Registry.reload, the path POST /admin/reload takes, so every replica converges on the same versions and pins by itself.

A scan only stats (lvm.watch); nothing is read or hashed unless the stamps changed. A version folder is acted on once
it is settled: it has its manifest.json and every file the manifest lists, and its files' sizes and mtimes were the
same at two scans in a row. Until then it is pending: not loaded, not refused, not dropped (so a copy in progress is
never loaded nor called corrupt, even when it stalls between two files).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from lvm.watch import Listings, Snapshot, snapshot

log = logging.getLogger("service.poll")


def settled(previous: Snapshot, current: Snapshot) -> tuple[tuple, frozenset[tuple[str, int]]]:
    """What a reload may act on (the settled versions' stamps and the pins), and the version folders still pending."""
    pending = frozenset(key for key, stamps in current.versions.items()
                        if not current.complete(key) or previous.versions.get(key) != stamps)
    view = {key: stamps for key, stamps in current.versions.items() if key not in pending}
    return (view, current.pins), pending


Reload = Callable[[frozenset[tuple[str, int]]], Awaitable[object]]


class Poller:
    """Scans `root` every `period_s` and calls `reload(pending)` (Registry.reload) when its settled part changed;
    `run` until cancelled."""

    def __init__(self, root: Path, reload: Reload, period_s: float) -> None:
        self.root, self.reload, self.period_s = Path(root), reload, period_s
        self.scans = self.reloads = 0  # observable progress, for tests: scans done after the first, reloads applied
        self._listings: Listings = {}

    async def run(self) -> None:
        log.info("polling %s every %g s", self.root, self.period_s)
        previous, applied = await self._snapshot(), None
        while True:
            await asyncio.sleep(self.period_s)
            current = await self._snapshot()
            view, pending = settled(previous, current)
            _log_waiting(previous, current)
            previous = current
            if view != applied:
                try:
                    await self.reload(pending)
                except Exception:  # a folder that vanished mid-scan, a full disk: the next period tries again
                    log.exception("rescanning %s failed; retrying in %g s", self.root, self.period_s)
                else:
                    self.reloads += 1
                    applied = view
            # Counted once the scan and its reload are done: a test that changes a file after `scans` moves knows the
            # change is not in the scan it waited for (counted as the scan began, a change could land in it).
            self.scans += 1

    async def _snapshot(self) -> Snapshot:
        return await asyncio.to_thread(snapshot, self.root, self._listings)


def _log_waiting(previous: Snapshot, current: Snapshot) -> None:
    """One line when a version folder starts to wait for files its manifest lists (a copy that never completes would
    otherwise wait in silence)."""
    for (name, version), files in current.missing.items():
        if (name, version) not in previous.missing:
            reason = f"its manifest lists {', '.join(files)}, not there yet"
            log.info("waiting for %s/%s: %s", name, version, reason,
                     extra={"change": "waiting", "model": name, "version": version, "reason": reason})
