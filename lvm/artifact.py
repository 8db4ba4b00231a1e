"""The artifact format, the one contract between training and the service: write (atomic, next free version), read,
verify. The optional files have modules of their own (lvm.embedding, lvm.reports, lvm.staging for the folder being
written); nothing outside lvm/ does I/O on artifacts.

    <root>/<name>/<version>/manifest.json        format version, kind, architecture, provenance, SHA-256 per file
    <root>/<name>/<version>/weights.safetensors  every tensor the model needs (no pickle)
    <root>/<name>/<version>/report/*.png         plots for people; hashed like every other file
    <root>/<name>/DEFAULT                        optional: the version number unpinned requests get (a file, so
                                                 never listed as a version)
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import safetensors
import safetensors.torch
from torch import Tensor

from lvm.architecture import build_model, check_shapes, weight_shapes
from lvm.networks import IMAGE_SHAPE, KINDS, LatentModel
from lvm.staging import follow_umask, staging_folder

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
PIN_FILE = "DEFAULT"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # always fullmatch: "$" would let a trailing newline in
# A version is written in ASCII digits without a leading zero ("²" and "١" pass str.isdigit but are not versions).
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,8}")

log = logging.getLogger("lvm.artifact")

# Keys every manifest has, with the type each must have.
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "name": str,
    "version": int,
    "kind": str,
    "latent_dim": int,
    "input_shape": list,
    "likelihood": str,
    "architecture": dict,
    "created_at": str,
    "training": dict,
    "data": dict,
    "metrics": dict,
    "software": dict,
    "files": dict,
}


class ArtifactError(Exception):
    """An artifact that cannot be used: missing, malformed manifest, failed checksum, weights that do not fit."""


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict
    tensors: dict[str, Tensor]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> int:
        return self.manifest["version"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def build(self) -> LatentModel:
        """The model in eval mode on the CPU, gradients off, with its class-conditional density when the artifact
        has one (lvm.classes, checked against its SHA-256 again)."""
        try:
            model = build_model(self.kind, self.manifest["architecture"], self.tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{self.path}: {exc}") from None
        if self.manifest["likelihood"] != model.likelihood:
            raise ArtifactError(f"{self.path}: likelihood {self.manifest['likelihood']!r} is not the {model.likelihood!r}"
                                f" a {self.kind} model is fitted under")
        from lvm.classes import has_classes, read_classes  # it imports this module

        if has_classes(self.manifest):
            model.class_density = read_classes(self.path, self.manifest)
        return model


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    return name


def check_destination(root: Path, name: str) -> Path:
    """The folder new versions of `name` go to, created if need be and shown writable by making (and removing) a
    staging folder in it, as write_artifact will; raises ValueError for a bad name and OSError for a folder that
    cannot be written. Training calls this first, so that it never trains for an hour into a place it cannot write."""
    name_dir = Path(root) / check_name(name)
    name_dir.mkdir(parents=True, exist_ok=True)
    with staging_folder(name_dir):
        pass
    return name_dir


def parse_version(text: str) -> int | None:
    """The version a folder name or query value stands for, or None unless it is ASCII [1-9][0-9]* (9 digits at most)."""
    return int(text) if VERSION_PATTERN.fullmatch(text) else None


def read_pin(name_dir: Path) -> int | None:
    """The version <root>/<name>/DEFAULT pins (surrounding whitespace allowed), None without the file; raises
    ArtifactError when it holds anything but a version number."""
    try:
        with open(Path(name_dir) / PIN_FILE, "rb") as f:
            raw = f.read(64)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArtifactError(f"{PIN_FILE} cannot be read ({exc.strerror})") from None
    text = raw.decode("ascii", "replace").strip()
    version = parse_version(text)
    if version is None:
        raise ArtifactError(f"{PIN_FILE} holds {text[:32]!r}, not a version number")
    return version


def list_versions(name_dir: Path) -> list[int]:
    """The integer versions present under <root>/<name>, ascending. Temporary and hidden folders are ignored; any
    other folder that is not a version name is skipped with one log line."""
    if not name_dir.is_dir():
        return []
    versions = []
    for p in name_dir.iterdir():
        if not p.is_dir() or p.name.startswith("."):
            continue
        version = parse_version(p.name)
        if version is None:
            log.warning("skipped %s: a version folder is named in ASCII digits without a leading zero", p)
        else:
            versions.append(version)
    return sorted(versions)


def scan(root: Path) -> Iterator[tuple[str, int, Path]]:
    """(name, version, path) for every version folder under root, by name then version."""
    if not root.is_dir():
        return
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and NAME_PATTERN.fullmatch(p.name)):
        for version in list_versions(name_dir):
            yield name_dir.name, version, name_dir / str(version)


def write_artifact(
    root: Path,
    name: str,
    model: LatentModel,
    manifest: dict,
    write_extras: Callable[[Path], None] | None = None,
) -> Path:
    """Writes a new version of `name` under root and returns its folder.

    `manifest` holds the training, data, metrics and software blocks; what the model says of itself (kind,
    latent_dim, likelihood, architecture) and format_version, name, version, created_at, input_shape and files are
    filled in here. `write_extras(folder)` may add files (the report). Everything is written into a temporary folder
    beside the versions and renamed into place at the end, so an interrupted write leaves no version behind; the
    leftovers of writers that were killed are removed here.
    """
    check_name(name)
    name_dir = Path(root) / name
    name_dir.mkdir(parents=True, exist_ok=True)
    architecture = model.architecture()
    weight_shapes(model.kind, architecture)  # refuses what no loader would accept (sizes beyond the bounds)
    with staging_folder(name_dir) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # The header carries the architecture too: the loader refuses a manifest edited to say something else.
        # One key only: safetensors writes its header's metadata in hash-map order, so two keys would give two
        # processes different bytes for the same weights (and a derived version a different SHA-256).
        metadata = {"architecture": json.dumps(architecture, sort_keys=True)}
        safetensors.torch.save_file(tensors, tmp / WEIGHTS_FILE, metadata=metadata)
        if write_extras is not None:
            write_extras(tmp)
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        described = {"kind": model.kind, "latent_dim": model.latent_dim, "likelihood": model.likelihood,
                     "architecture": architecture}
        full = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": 0,
            **described,
            "input_shape": list(IMAGE_SHAPE),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **manifest,
            **described,  # the model's word wins over a caller's
            "files": files,
        }
        while True:
            version = (list_versions(name_dir) or [0])[-1] + 1
            full["version"] = version
            _write_json(tmp / MANIFEST_FILE, full)
            follow_umask(tmp)
            target = name_dir / str(version)
            try:
                # rename(2) is atomic and refuses a non-empty target, so a concurrent writer that took this number
                # first (its folder is never empty) makes us retry with the next one.
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            return target


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def read_manifest(path: Path) -> dict:
    """Parses and validates <path>/manifest.json; raises ArtifactError saying what is wrong."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no {MANIFEST_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: {MANIFEST_FILE} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: {MANIFEST_FILE} must hold a JSON object")
    problems = [
        f"'{key}' missing" if key not in manifest else f"'{key}' must be {_type_name(kind)}"
        for key, kind in REQUIRED_KEYS.items()
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool)
    ]
    if problems:
        raise ArtifactError(f"{path}: invalid manifest: {', '.join(problems)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {manifest['format_version']} is not supported ({FORMAT_VERSION} is)")
    if manifest["kind"] not in KINDS:
        raise ArtifactError(f"{path}: unknown kind {manifest['kind']!r}; expected one of {', '.join(KINDS)}")
    if manifest["latent_dim"] < 1 or manifest["architecture"].get("latent_dim") != manifest["latent_dim"]:
        raise ArtifactError(f"{path}: latent_dim {manifest['latent_dim']} disagrees with the architecture")
    if manifest["input_shape"] != list(IMAGE_SHAPE):
        raise ArtifactError(f"{path}: input_shape {manifest['input_shape']} is not {list(IMAGE_SHAPE)}")
    if parse_version(path.name) is not None and (manifest["version"] != int(path.name) or manifest["name"] != path.parent.name):
        raise ArtifactError(
            f"{path}: manifest says {manifest['name']}/{manifest['version']}, folder is {path.parent.name}/{path.name}"
        )
    if WEIGHTS_FILE not in manifest["files"]:
        raise ArtifactError(f"{path}: manifest lists no {WEIGHTS_FILE}")
    try:
        weight_shapes(manifest["kind"], manifest["architecture"])  # bounds and shape, before any file is read
    except ValueError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    return manifest


def _type_name(kind: type | tuple[type, ...]) -> str:
    return {int: "an integer", str: "a string", list: "a list", dict: "an object"}.get(kind, str(kind))


def listed_file(path: Path, manifest: dict, rel: str) -> Path:
    """The artifact's file `rel` after checking it against the SHA-256 its manifest lists (for the readers of the extra
    files: embedding, classes, reference, reports); ArtifactError when it is not listed, missing or altered."""
    path = Path(path)
    expected = manifest.get("files", {}).get(rel)
    if expected is None:
        raise ArtifactError(f"{path}: the manifest lists no {rel}")
    file = path / rel
    if not file.is_file() or sha256_file(file) != expected:
        raise ArtifactError(f"{path}: {rel} is missing or fails its SHA-256 check")
    return file


def verify_files(path: Path, manifest: dict) -> None:
    """Checks every file the manifest lists against its SHA-256; raises ArtifactError on the first mismatch."""
    root = Path(path).resolve()
    for rel, expected in manifest["files"].items():
        file = (root / rel).resolve()
        if root not in file.parents:
            raise ArtifactError(f"{path}: file entry {rel!r} points outside the artifact")
        if not file.is_file():
            raise ArtifactError(f"{path}: {rel} is listed in the manifest but missing")
        if sha256_file(file) != expected:
            raise ArtifactError(f"{path}: {rel} fails its SHA-256 check (expected {expected})")


def load_artifact(path: Path, verify: bool = True) -> Artifact:
    """Reads and (by default) verifies one version folder; the weights stay on the CPU."""
    path = Path(path)
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)
    check_header(path, manifest)
    try:
        tensors = safetensors.torch.load_file(path / WEIGHTS_FILE, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for truncated or malformed files
        raise ArtifactError(f"{path}: {WEIGHTS_FILE} cannot be read ({exc})") from None
    return Artifact(path=path, manifest=manifest, tensors=tensors)


def check_header(path: Path, manifest: dict) -> None:
    """Compares the weights' safetensors header (names, shapes, the architecture recorded at write time) with the
    manifest, reading no tensor; raises ArtifactError on any disagreement."""
    try:
        with safetensors.safe_open(path / WEIGHTS_FILE, framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
            recorded = (f.metadata() or {}).get("architecture")
    except Exception as exc:  # safetensors raises its own error types for truncated or malformed files
        raise ArtifactError(f"{path}: {WEIGHTS_FILE} cannot be read ({exc})") from None
    try:
        check_shapes(manifest["kind"], manifest["architecture"], shapes)
    except ValueError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    # Artifacts written before the header carried the architecture have none to compare with.
    if recorded is not None and json.loads(recorded) != manifest["architecture"]:
        written = json.loads(recorded)
        fields = sorted(k for k in written.keys() | manifest["architecture"].keys()
                        if written.get(k) != manifest["architecture"].get(k))
        raise ArtifactError(f"{path}: the manifest's architecture disagrees with the one its weights were written with: "
                            + ", ".join(f"{k} {manifest['architecture'].get(k)!r} (written: {written.get(k)!r})"
                                        for k in fields))
