"""What a poller needs to notice a change in the artifacts folder: a stat stamp of every version folder (each file's
path, size and mtime) and of each model's DEFAULT pin, and which files a version's manifest lists that the folder does
not have yet. A scan costs a few stat calls per version; a manifest is read only when its own stamp changed (given a
`Listings` kept from scan to scan). Verifying and loading stay with lvm.artifact and whoever calls it."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from lvm.artifact import MANIFEST_FILE, NAME_PATTERN, PIN_FILE, parse_version, read_manifest

# One file: (path relative to its version folder, size in bytes, mtime in ns).
Stamp = tuple[str, int, int]


@dataclass(frozen=True)
class Snapshot:
    versions: dict[tuple[str, int], tuple[Stamp, ...]]  # (name, version) -> its files' stamps, sorted
    pins: dict[str, tuple[int, int, int]]  # name -> (size, mtime_ns, inode) of its DEFAULT file, where there is one
    # (name, version) -> the files its manifest lists that the folder does not have (yet), where there are any
    missing: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)

    def complete(self, key: tuple[str, int]) -> bool:
        """Whether the version folder has its manifest and every file the manifest lists (a copy in progress may lack
        either, however long it stalls between two files)."""
        return key not in self.missing and any(path == MANIFEST_FILE for path, _, _ in self.versions.get(key, ()))


# (name, version) -> (its manifest's stamp, the files that manifest lists): kept from one scan to the next, so that a
# manifest is read again only when it changed.
Listings = dict[tuple[str, int], tuple[Stamp, frozenset[str]]]


def snapshot(root: Path, listings: Listings | None = None) -> Snapshot:
    """Stamps of everything lvm.scan would list under root, and the listed files each version still lacks; folders
    that are not versions are skipped silently (lvm.scan logs them when a reload runs). Pass the same `listings` to
    every scan of a root to read each manifest once per change (without it, every manifest is read)."""
    listings = {} if listings is None else listings
    versions, pins, missing = {}, {}, {}
    for name_entry in _dirs(Path(root)):
        if not NAME_PATTERN.match(name_entry.name):
            continue
        try:
            pin = os.stat(os.path.join(name_entry.path, PIN_FILE))
            pins[name_entry.name] = (pin.st_size, pin.st_mtime_ns, pin.st_ino)
        except OSError:
            pass
        for entry in _dirs(Path(name_entry.path)):
            version = parse_version(entry.name)
            if version is not None:
                key = (name_entry.name, version)
                versions[key] = tuple(sorted(_stamps(entry.path, "")))
                listed = _listed(entry.path, versions[key], listings.get(key))
                if listed is None:
                    listings.pop(key, None)
                    continue
                listings[key] = listed
                present = {path for path, size, _ in versions[key] if size >= 0}
                if absent := listed[1] - present:
                    missing[key] = tuple(sorted(absent))
    for gone in listings.keys() - versions.keys():
        del listings[gone]
    return Snapshot(versions, pins, missing)


def _listed(folder: str, stamps: tuple[Stamp, ...], before: tuple[Stamp, frozenset[str]] | None):
    """The manifest's stamp and the files it lists (None without a manifest): `before`, what the previous scan read,
    while the manifest's stamp is unchanged."""
    stamp = next((s for s in stamps if s[0] == MANIFEST_FILE), None)
    if stamp is None:
        return None
    if before is not None and before[0] == stamp:
        return before
    try:
        files = read_manifest(Path(folder))["files"]
    except Exception:  # unreadable, half-written or invalid: nothing to wait for; the loader says what is wrong
        files = {}
    # An entry naming a path outside the folder is never waited for either: the loader refuses it.
    return stamp, frozenset(rel for rel in files if _inside(rel))


def _inside(rel: str) -> bool:
    norm = posixpath.normpath(rel)
    return not (posixpath.isabs(norm) or norm == ".." or norm.startswith("../"))


def _dirs(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return [e for e in entries if e.is_dir()]  # a .tmp-* staging folder is no version name either
    except OSError:  # gone meanwhile, or not a folder
        return []


def _stamps(folder: str, prefix: str) -> list[Stamp]:
    stamps = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stamps.extend(_stamps(e.path, f"{prefix}{e.name}/"))
                    else:
                        st = e.stat()
                        stamps.append((prefix + e.name, st.st_size, st.st_mtime_ns))
                except OSError:  # removed between listing and stat: the next scan sees the folder change
                    stamps.append((prefix + e.name, -1, -1))
    except OSError:
        pass
    return stamps
