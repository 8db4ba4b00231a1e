"""The temporary folder a new version is written into before it is renamed into place (lvm.artifact owns the rest).

Its writer holds an flock on it until the rename, so the next writer can tell a live folder from the leftover of a
killed one (the kernel drops the lock with the process) and removes the leftovers; `.tmp-*` folders are never listed
as versions. Files end with the modes the umask gives (safetensors writes its file 0600, unreadable to other users).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"
# A folder younger than this is left alone even when unlocked: its writer may be between mkdir and flock.
STALE_AFTER_S = 5.0

log = logging.getLogger("lvm.artifact")


@contextmanager
def staging_folder(name_dir: Path) -> Iterator[Path]:
    """A fresh locked `.tmp-*` folder in name_dir (stale ones removed first); removed again if the body raises."""
    remove_stale(name_dir)
    tmp = name_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the lock stays with the folder's inode through the rename into place
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def remove_stale(name_dir: Path, now: float | None = None) -> list[Path]:
    """Removes the `.tmp-*` folders in name_dir whose writer has gone (no lock held on them); returns them."""
    now = time.time() if now is None else now
    removed = []
    for path in Path(name_dir).glob(f"{TMP_PREFIX}*"):
        try:
            if not path.is_dir() or now - path.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # gone meanwhile: renamed into place or removed by another writer
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its writer is alive
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left by a writer that did not finish", path)
        removed.append(path)
    return removed


def follow_umask(folder: Path) -> None:
    """Gives every file under folder the mode a plain open() would have (0644 under umask 022)."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
