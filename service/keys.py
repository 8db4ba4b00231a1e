"""API keys: the keys file (`LATENTSERVE_API_KEYS_FILE`: named keys, their scopes, SHA-256 digests and limits), its
re-reading when it changes, the single `LATENTSERVE_API_KEY`'s checks, and `python -m service keys add`. The
middleware that asks these questions per request lives in service.auth.

A line of the file: `id  scopes  sha256:<64 hex>  [rate=R] [burst=B]`, `#` starts a comment. The digest is of the key
exactly as the client sends it, so the file never holds a secret.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("service.keys")

INFER, ADMIN = "infer", "admin"
SCOPES = (INFER, ADMIN)
# Where the auth middleware leaves (key id, scopes) in the ASGI scope, for /metrics and /auth/whoami; a request
# without a valid key has the id ANONYMOUS, so that metric labels only ever hold configured ids.
KEY_SCOPE = "latentserve.key"
ANONYMOUS = "anonymous"
RELOAD_CHECK_S = 2.0  # the file is stat-ed at most this often
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})", re.IGNORECASE)
_LIMIT = re.compile(r"(rate|burst)=([0-9]+(?:\.[0-9]+)?)")


class KeyFileError(ValueError):
    """A keys file (or a single key) that cannot be used; the message names the line."""


@dataclass(frozen=True)
class Key:
    """One configured key: `digest` is SHA-256 of the secret (32 bytes); `rate` in requests per second (None: no
    limit) with a bucket of `burst` requests."""

    id: str
    scopes: frozenset[str]
    digest: bytes
    rate: float | None = None
    burst: float | None = None
    scope_names: tuple[str, ...] = field(init=False, compare=False)  # the scopes in SCOPES order, for replies

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope_names", tuple(s for s in SCOPES if s in self.scopes))


def digest_of(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


def check_single_key(value: str) -> str:
    """LATENTSERVE_API_KEY as it may be used: refuses what could never match or silently turn authentication off."""
    if not value.strip():
        raise ValueError("LATENTSERVE_API_KEY is set but empty; unset it to run without a key, or give it a value")
    if value != value.strip():
        raise ValueError("LATENTSERVE_API_KEY starts or ends with whitespace, which a client's header cannot carry")
    if not (value.isascii() and value.isprintable()):
        raise ValueError("LATENTSERVE_API_KEY must be printable ASCII: browsers and HTTP clients cannot send others")
    return value


def parse_line(line: str, number: int) -> Key | None:
    """One line of the keys file as a Key, None for a blank or comment line; KeyFileError naming `number` else."""
    fields = line.split("#", 1)[0].split()
    if not fields:
        return None
    where = f"line {number}"
    if len(fields) < 3:
        raise KeyFileError(f"{where}: expected 'id scopes sha256:<64 hex> [rate=R] [burst=B]', got {len(fields)} "
                           "fields")
    name, scopes, digest, *extra = fields
    if not _ID.fullmatch(name):
        raise KeyFileError(f"{where}: key id must be 1-64 letters, digits, '_', '.', '-'")
    scope_set = frozenset(scopes.split(","))
    if not scope_set <= set(SCOPES):
        raise KeyFileError(f"{where}: unknown scope in {scopes!r}; scopes are {', '.join(SCOPES)}")
    match = _DIGEST.fullmatch(digest)
    if not match:
        raise KeyFileError(f"{where}: the third field must be sha256:<64 hex digits> (the secret is never stored)")
    limits: dict[str, float] = {}
    for item in extra:
        limit = _LIMIT.fullmatch(item)
        if not limit or limit[1] in limits or float(limit[2]) <= 0:
            raise KeyFileError(f"{where}: expected rate=R or burst=B with a positive number, got {item[:40]!r}")
        limits[limit[1]] = float(limit[2])
    if "burst" in limits and "rate" not in limits:
        raise KeyFileError(f"{where}: burst needs a rate")
    rate = limits.get("rate")
    burst = max(1.0, limits.get("burst", rate)) if rate else None
    return Key(name, scope_set, bytes.fromhex(match[1]), rate, burst)


def parse_keys(text: str) -> list[Key]:
    """Every key of a keys file; KeyFileError at the first bad line, or a repeated id or digest."""
    keys: list[Key] = []
    for number, line in enumerate(text.splitlines(), 1):
        key = parse_line(line, number)
        if key is None:
            continue
        if any(k.id == key.id for k in keys):
            raise KeyFileError(f"line {number}: key id {key.id!r} appears twice")
        if any(k.digest == key.digest for k in keys):
            raise KeyFileError(f"line {number}: the same secret digest appears twice")
        keys.append(key)
    return keys


class KeyRing:
    """The keys in force: the single key and/or the keys file, which is re-read when its stat (mtime, size, inode)
    changes, looked at no more often than every RELOAD_CHECK_S. A file that fails to parse keeps the previous keys."""

    def __init__(self, single_key: str | None, keys_file: Path | None, clock=time.monotonic) -> None:
        self._single = [Key("default", frozenset(SCOPES), digest_of(single_key))] if single_key else []
        self._file, self._clock = keys_file, clock
        self.configured = bool(single_key) or keys_file is not None  # then every guarded route needs a key
        self._stat: tuple | None = None
        self._checked = -RELOAD_CHECK_S
        self.keys: tuple[Key, ...] = tuple(self._single)
        if keys_file is not None:
            self._stat = self._file_stat()
            if self._stat is None:  # e.g. an optional Secret not created yet: closed until the file appears
                log.warning("keys file %s does not exist (yet): no key of it is accepted until it does", keys_file)
            else:
                self.keys = tuple(self._single + parse_keys(keys_file.read_text()))  # a bad file refuses to start
            self._checked = clock()

    def current(self) -> tuple[Key, ...]:
        """The keys now, re-reading the file first when it is due and has changed."""
        if self._file is not None and self._clock() - self._checked >= RELOAD_CHECK_S:
            self._checked = self._clock()
            stat = self._file_stat()
            if stat != self._stat:
                self._reload(stat)
        return self.keys

    def _file_stat(self) -> tuple | None:
        try:
            s = os.stat(self._file)
        except OSError:
            return None
        return (s.st_mtime_ns, s.st_size, s.st_ino)

    def _reload(self, stat: tuple | None) -> None:
        if stat is None:  # deleted: keep the keys in force, as for a file that does not parse
            log.warning("keys file %s has gone; the previous %d keys stay in force", self._file, len(self.keys))
            self._stat = stat
            return
        try:
            keys = parse_keys(self._file.read_text())
        except (OSError, UnicodeDecodeError, KeyFileError) as exc:
            log.warning("keys file %s not reloaded, the previous %d keys stay in force: %s", self._file,
                        len(self.keys), exc)
            self._stat = stat  # warn once per change, not on every check
            return
        self._stat = stat
        self.keys = tuple(self._single + keys)
        log.info("keys file %s reloaded: %d keys (%s)", self._file, len(keys), ", ".join(k.id for k in keys))


def add_key(path: Path, name: str, scopes: str, rate: float | None, burst: float | None) -> str:
    """Makes a new secret, appends its line to the keys file (after checking the file and the line) and returns the
    secret, which is shown once and stored nowhere."""
    secret = "ls_" + secrets.token_urlsafe(32)
    line = f"{name}  {scopes}  sha256:{digest_of(secret).hex()}"
    if rate is not None:
        line += f"  rate={rate:g}"
    if burst is not None:
        line += f"  burst={burst:g}"
    existing = path.read_text() if path.exists() else ""
    separator = "\n" if existing and not existing.endswith("\n") else ""
    parse_keys(existing)
    try:  # the whole file as it will be: refuses a bad id or scope, or an id already there
        parse_keys(existing + separator + line)
    except KeyFileError as exc:
        raise KeyFileError(f"the new key is refused ({exc})") from None
    with path.open("a") as f:
        f.write(separator + line + "\n")
    return secret


def keys_main(argv: list[str]) -> None:
    """`python -m service keys add ID --scopes infer[,admin] [--rate R] [--burst B] [--file PATH]`."""
    parser = argparse.ArgumentParser(prog="python -m service keys")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="make a key, append its digest to the keys file, print the secret once")
    add.add_argument("id")
    add.add_argument("--scopes", required=True, help="comma-separated: infer, admin")
    add.add_argument("--rate", type=float, help="requests per second (a token bucket per replica)")
    add.add_argument("--burst", type=float, help="bucket size (default: the rate)")
    add.add_argument("--file", type=Path, default=os.environ.get("LATENTSERVE_API_KEYS_FILE"),
                     help="the keys file (default: LATENTSERVE_API_KEYS_FILE)")
    args = parser.parse_args(argv)
    if args.file is None:
        parser.error("no keys file: pass --file or set LATENTSERVE_API_KEYS_FILE")
    try:
        secret = add_key(args.file, args.id, args.scopes, args.rate, args.burst)
    except (OSError, KeyFileError) as exc:
        sys.exit(f"latentserve keys: {exc}")
    print(secret)
    print(f"added key {args.id!r} to {args.file}; the secret above is shown only now", file=sys.stderr)
