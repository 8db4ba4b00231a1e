"""Which (name, version) pairs are loaded and serving. A reload rescans the artifacts folder: each new version is
loaded, verified and warmed before it takes traffic, then swapped in; removed versions stop after their queued work.

Model names from requests are only ever looked up here, never used to build a path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import lvm
from lvm.reports import report_files
from service.batcher import BatchObserver
from service.errors import InvalidInput, Unavailable, UnknownModel
from service.models import ServedModel
from service.runtime import Runtime

log = logging.getLogger("service.registry")


@dataclass(frozen=True)
class Refusal:
    """A version that could not be loaded, and why."""

    name: str
    version: int
    reason: str


class Registry:
    def __init__(self, root: Path, default_model: str, runtime: Runtime) -> None:
        self.root, self.default_model, self._runtime = Path(root), default_model, runtime
        self._metrics = runtime.metrics
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.refused: list[Refusal] = []
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return sum(len(v) for v in self.models.values())

    def get(self, name: str | None, version: int | None) -> ServedModel:
        """The version asked for (default: the default model, its highest version); 404 when it is not loaded."""
        if not self.models:
            raise Unavailable("no model is loaded yet", 5)
        name = name or self.default_model
        versions = self.models.get(name)
        if versions is None:
            raise UnknownModel(f"model {name[:64]!r} is not loaded; loaded models: {', '.join(sorted(self.models))}")
        if version is None:
            return versions[max(versions)]
        served = versions.get(version)
        if served is None:
            raise UnknownModel(f"model {name!r} has no loaded version {version}; loaded: {sorted(versions)}")
        return served

    def resolve(self, name: str | None, version_text: str | None) -> ServedModel:
        """`get` from raw query parameters; a version is ASCII digits, as the folders are named."""
        if version_text is None:
            return self.get(name, None)
        version = lvm.parse_version(version_text)
        if version is None:
            raise InvalidInput(f"version must be a positive integer in ASCII digits, got {version_text[:32]!r}")
        return self.get(name, version)

    async def reload(self) -> dict:
        """Rescans the folder: load + verify + warm each new version, then swap; returns what changed."""
        async with self._lock:
            found = await asyncio.to_thread(lambda: list(lvm.scan(self.root)))
            fresh, refused = [], []
            for name, version, path in found:
                if version in self.models.get(name, {}):
                    continue
                try:
                    fresh.append(await self._prepare(path))
                except Exception as exc:
                    if not isinstance(exc, lvm.ArtifactError):
                        log.exception("loading %s/%s failed", name, version)
                    reason = str(exc) or type(exc).__name__
                    log.error("refused %s/%s: %s", name, version, reason)
                    refused.append(Refusal(name, version, reason))
            present = {(name, version) for name, version, _ in found}
            dropped = [s for versions in self.models.values() for s in versions.values()
                       if (s.name, s.version) not in present]
            self._swap(fresh, dropped)
            self.refused = refused
            for served in dropped:
                await served.close()  # queued requests of a removed version still finish
                self._metrics.model_unloaded(served.name, served.version, served.kind)
            return {
                "loaded": [{"name": s.name, "version": s.version} for s in fresh],
                "dropped": [{"name": s.name, "version": s.version} for s in dropped],
                "refused": [asdict(r) for r in refused],
                "serving": {name: max(versions) for name, versions in sorted(self.models.items())},
            }

    async def _prepare(self, path: Path) -> ServedModel:
        artifact = await asyncio.to_thread(lvm.load_artifact, path)
        served = await asyncio.to_thread(ServedModel.load, artifact, self._runtime.placement)
        # Warm-up runs on the compute thread, between the batches of the versions already serving.
        await served.warm_up(self._runtime)
        return served

    def _swap(self, fresh: list[ServedModel], dropped: list[ServedModel]) -> None:
        """Synchronous, so no request ever sees a half-updated registry."""
        for served in dropped:
            versions = self.models[served.name]
            del versions[served.version]
            if not versions:
                del self.models[served.name]
        for served in fresh:
            served.start(self._runtime, self._observer(served))
            self.models.setdefault(served.name, {})[served.version] = served
            self._metrics.model_loaded(served.name, served.version, served.kind)
            log.info("serving %s/%s (%s, latent_dim %d; batch sizes %s)", served.name, served.version, served.kind,
                     served.latent_dim, ", ".join(f"{op} {n}" for op, n in served.batch_sizes.items()))

    def _observer(self, served: ServedModel) -> Callable[[str], BatchObserver]:
        return lambda op: self._metrics.batch_observer(served.name, served.version, op)

    def describe(self, name: str) -> dict:
        """`/models/{name}`: the manifests of its loaded versions and its refused ones."""
        versions = self.models.get(name)
        refused = [asdict(r) for r in self.refused if r.name == name]
        if versions is None and not refused:
            raise UnknownModel(f"model {name[:64]!r} is not loaded; loaded models: {', '.join(sorted(self.models))}")
        return {
            "name": name,
            "default_version": max(versions) if versions else None,
            "versions": [versions[v].artifact.manifest for v in sorted(versions or {})],
            # What the report route serves for each version: lvm's allow-list, not whatever the manifest lists.
            "reports": {str(v): report_files(versions[v].artifact.manifest) for v in sorted(versions or {})},
            "refused": refused,
        }

    def overview(self) -> dict:
        """`/models`: one entry per loaded model, plus every refused version."""
        models = []
        for name, versions in sorted(self.models.items()):
            latest = versions[max(versions)]
            models.append({
                "name": name,
                "kind": latest.kind,
                "latent_dim": latest.latent_dim,
                "versions": sorted(versions),
                "default_version": latest.version,
                "default": name == self.default_model,
                "batch_sizes": latest.batch_sizes,
            })
        return {"models": models, "default_model": self.default_model, "refused": [asdict(r) for r in self.refused]}

    async def close(self) -> None:
        for versions in self.models.values():
            for served in versions.values():
                await served.close()
