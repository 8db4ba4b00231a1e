"""Which (name, version) pairs are loaded and serving, and which version each model's unpinned requests get. A reload
rescans the artifacts folder: each new version is loaded, verified and warmed before it takes traffic, then swapped in;
removed versions stop after their queued work; a model's DEFAULT file pins its default (else the highest wins).

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


@dataclass(frozen=True)
class Default:
    """The version a model's unpinned requests get, and why: "pinned" (its DEFAULT file), "highest" (no pin), or
    "previous" (the pin cannot be followed, `pin_error` says why, and the default before it stays)."""

    version: int
    reason: str
    pin: int | None = None
    pin_error: str | None = None


def choose_default(versions: set[int], pin: int | None, pin_error: str | None, refused: dict[int, str],
                   previous: Default | None) -> Default:
    """The default among the loaded `versions` given the DEFAULT file's pin (or why it could not be read) and the
    versions refused (version -> reason); a pin that cannot be followed keeps the previous default while it is
    loaded, else the highest."""
    if pin_error is None and pin is None:
        return Default(max(versions), "highest")
    if pin_error is None and pin in versions:
        return Default(pin, "pinned", pin)
    if pin_error is None:
        pin_error = (f"DEFAULT pins version {pin}, which was refused: {refused[pin]}" if pin in refused
                     else f"DEFAULT pins version {pin}, which is not loaded (loaded: {sorted(versions)})")
    if previous is not None and previous.version in versions:
        return Default(previous.version, "previous", pin, pin_error)
    return Default(max(versions), "previous", pin, pin_error)


class Registry:
    def __init__(self, root: Path, default_model: str, runtime: Runtime) -> None:
        self.root, self.default_model, self._runtime = Path(root), default_model, runtime
        self._metrics = runtime.metrics
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.refused: list[Refusal] = []
        self.defaults: dict[str, Default] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return sum(len(v) for v in self.models.values())

    def get(self, name: str | None, version: int | None) -> ServedModel:
        """The version asked for (default: the default model, its default version); 404 when it is not loaded."""
        if not self.models:
            raise Unavailable("no model is loaded yet", 5)
        name = name or self.default_model
        versions = self.models.get(name)
        if versions is None:
            raise self._unknown(name)
        if version is None:
            return versions[self.defaults[name].version]
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

    async def reload(self, pending: frozenset[tuple[str, int]] = frozenset()) -> dict:
        """Rescans the folder: load + verify + warm each new version, then swap, and follow the DEFAULT pins; returns
        what changed. Versions in `pending` (folders still being written, service.poll) are left as they are."""
        async with self._lock:
            found, pins = await asyncio.to_thread(self._scan)
            fresh, refused = [], [r for r in self.refused if (r.name, r.version) in pending]
            for name, version, path in found:
                if version in self.models.get(name, {}) or (name, version) in pending:
                    continue
                try:
                    fresh.append(await self._prepare(path))
                except Exception as exc:
                    if not isinstance(exc, lvm.ArtifactError):
                        log.exception("loading %s/%s failed", name, version)
                    refused.append(Refusal(name, version, str(exc) or type(exc).__name__))
            present = {(name, version) for name, version, _ in found} | pending
            dropped = [s for versions in self.models.values() for s in versions.values()
                       if (s.name, s.version) not in present]
            self._swap(fresh, dropped, pins, refused)
            self._log_refusals(refused)
            self.refused = refused
            self._metrics.artifacts_refused([(r.name, r.version) for r in refused])
            for served in dropped:
                await served.close()  # queued requests of a removed version still finish
                self._metrics.model_unloaded(served.name, served.version, served.kind)
                log.info("dropped %s/%s: its folder is gone; its queued requests have finished", served.name,
                         served.version, extra={"change": "dropped", "model": served.name, "version": served.version})
            return {
                "loaded": [{"name": s.name, "version": s.version} for s in fresh],
                "dropped": [{"name": s.name, "version": s.version} for s in dropped],
                "refused": [asdict(r) for r in refused],
                "serving": {name: self.defaults[name].version for name in sorted(self.models)},
            }

    def _scan(self) -> tuple[list[tuple[str, int, Path]], dict[str, tuple[int | None, str | None]]]:
        """The version folders, and each model's pin or why its DEFAULT file could not be read."""
        found = list(lvm.scan(self.root))
        pins = {}
        for name in {name for name, _, _ in found}:
            try:
                pins[name] = (lvm.read_pin(self.root / name), None)
            except lvm.ArtifactError as exc:
                pins[name] = (None, str(exc))
        return found, pins

    def _log_refusals(self, refused: list[Refusal]) -> None:
        """One line per new refusal (or new reason); a version refused again for the same reason is no change."""
        before = set(self.refused)
        for r in refused:
            if r not in before:
                log.error("refused %s/%s: %s", r.name, r.version, r.reason,
                          extra={"change": "refused", "model": r.name, "version": r.version, "reason": r.reason})

    async def _prepare(self, path: Path) -> ServedModel:
        artifact = await asyncio.to_thread(lvm.load_artifact, path)
        served = await asyncio.to_thread(ServedModel.load, artifact, self._runtime.placement)
        # Warm-up runs on the compute thread, between the batches of the versions already serving.
        await served.warm_up(self._runtime)
        return served

    def _swap(self, fresh: list[ServedModel], dropped: list[ServedModel], pins: dict, refused: list[Refusal]) -> None:
        """Synchronous, so no request ever sees a half-updated registry (nor a default that is not loaded)."""
        for served in dropped:
            versions = self.models[served.name]
            del versions[served.version]
            if not versions:
                del self.models[served.name]
        for served in fresh:
            served.start(self._runtime, self._observer(served))
            self.models.setdefault(served.name, {})[served.version] = served
            self._metrics.model_loaded(served.name, served.version, served.kind)
            log.info("loaded %s/%s (%s, latent_dim %d; batch sizes %s)", served.name, served.version, served.kind,
                     served.latent_dim, ", ".join(f"{op} {n}" for op, n in served.batch_sizes.items()),
                     extra={"change": "loaded", "model": served.name, "version": served.version})
        self._choose_defaults(pins, refused)

    def _choose_defaults(self, pins: dict, refused: list[Refusal]) -> None:
        defaults = {}
        for name, versions in self.models.items():
            pin, pin_error = pins.get(name, (None, None))
            refusals = {r.version: r.reason for r in refused if r.name == name}
            previous = self.defaults.get(name)
            chosen = defaults[name] = choose_default(set(versions), pin, pin_error, refusals, previous)
            if chosen == previous:
                continue
            fields = {"change": "default", "model": name, "version": chosen.version, "reason": chosen.reason}
            if chosen.pin_error:
                log.warning("%s: %s; the default stays %s/%s", name, chosen.pin_error, name, chosen.version,
                            extra={**fields, "pin_error": chosen.pin_error})
            elif previous is None or previous.version != chosen.version or previous.reason != chosen.reason:
                log.info("default of %s is now %s/%s (%s)", name, name, chosen.version, chosen.reason, extra=fields)
        self.defaults = defaults

    def _observer(self, served: ServedModel) -> Callable[[str], BatchObserver]:
        return lambda op: self._metrics.batch_observer(served.name, served.version, op)

    def _unknown(self, name: str) -> UnknownModel:
        """404 naming the loaded models, with each one's kind where the name differs (`pca` serves kind `ppca`)."""
        loaded = []
        for model, versions in sorted(self.models.items()):
            kind = versions[max(versions)].kind
            loaded.append(model if kind == model else f"{model} (kind {kind})")
        return UnknownModel(f"model {name[:64]!r} is not loaded; loaded models: {', '.join(loaded)}")

    def describe(self, name: str) -> dict:
        """`/models/{name}`: the manifests of its loaded versions, its default and why, and its refused versions."""
        versions = self.models.get(name)
        refused = [asdict(r) for r in self.refused if r.name == name]
        if versions is None and not refused:
            raise self._unknown(name)
        default = self.defaults.get(name) if versions else None
        return {
            "name": name,
            "default_version": default and default.version,
            "default_reason": default and default.reason,
            "pin": default and default.pin,
            "pin_error": default and default.pin_error,
            "versions": [versions[v].artifact.manifest for v in sorted(versions or {})],
            # What the report route serves for each version: lvm's allow-list, not whatever the manifest lists.
            "reports": {str(v): report_files(versions[v].artifact.manifest) for v in sorted(versions or {})},
            "refused": refused,
        }

    def overview(self) -> dict:
        """`/models`: one entry per loaded model (described by its default version), plus every refused version."""
        models = []
        for name, versions in sorted(self.models.items()):
            default = self.defaults[name]
            served = versions[default.version]
            models.append({
                "name": name,
                "kind": served.kind,
                "latent_dim": served.latent_dim,
                "versions": sorted(versions),
                "default_version": default.version,
                "default_reason": default.reason,
                "pin_error": default.pin_error,
                "default": name == self.default_model,
                "batch_sizes": served.batch_sizes,
            })
        return {"models": models, "default_model": self.default_model, "refused": [asdict(r) for r in self.refused]}

    async def close(self) -> None:
        for versions in self.models.values():
            for served in versions.values():
                await served.close()
