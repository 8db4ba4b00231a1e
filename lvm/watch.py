"""What a poller needs to notice a change in the artifacts folder without reading any file: a stat stamp of every
version folder (each file's path, size and mtime) and of each model's DEFAULT pin. A scan costs a few stat calls per
version; reading, verifying and loading stay with lvm.artifact and whoever calls it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lvm.artifact import MANIFEST_FILE, NAME_PATTERN, PIN_FILE, parse_version

# One file: (path relative to its version folder, size in bytes, mtime in ns).
Stamp = tuple[str, int, int]


@dataclass(frozen=True)
class Snapshot:
    versions: dict[tuple[str, int], tuple[Stamp, ...]]  # (name, version) -> its files' stamps, sorted
    pins: dict[str, tuple[int, int, int]]  # name -> (size, mtime_ns, inode) of its DEFAULT file, where there is one

    def complete(self, key: tuple[str, int]) -> bool:
        """Whether the version folder has its manifest (a copy in progress may not have it yet)."""
        return any(path == MANIFEST_FILE for path, _, _ in self.versions.get(key, ()))


def snapshot(root: Path) -> Snapshot:
    """Stamps of everything lvm.scan would list under root; folders that are not versions are skipped silently
    (lvm.scan logs them when a reload runs)."""
    versions, pins = {}, {}
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
                versions[(name_entry.name, version)] = tuple(sorted(_stamps(entry.path, "")))
    return Snapshot(versions, pins)


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
