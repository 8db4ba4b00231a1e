"""The lock files (requirements/*.txt, written by `make lock`) against pyproject.toml: every requirement of the set a
lock covers is locked at a version its range allows, every pin carries hashes, the runtime and train locks hold the dev
lock's versions, each lock installs on Linux x86_64, Linux aarch64 and macOS arm64 (resolved, not downloaded), and
the FastAPI the tests run on is the locked one (the service reads a private FastAPI detail)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.common import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Lock file -> the pyproject extras it holds beside the runtime dependencies.
LOCKS = {"runtime": [], "train": ["train"], "dev": ["dev"]}
# The image's platform (the lock is universal, Makefile's LOCK): what pyproject's environment markers are evaluated
# against when checking that each requirement is locked.
TARGET = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def parse_lock(text: str) -> dict[str, tuple[Version, int]]:
    """Canonical name -> (pinned version, number of hashes) for each entry of a `--generate-hashes` lock."""
    pins: dict[str, tuple[Version, int]] = {}
    current = None
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match[1])
            assert current not in pins, f"{current} is locked twice"
            pins[current] = (Version(match[2]), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
        elif line.strip() and not line.lstrip().startswith("#") and not line.startswith(" "):
            pytest.fail(f"not a `name==version` pin: {line!r}")
    return pins


def requirements(extras: list[str]) -> list[Requirement]:
    """The runtime dependencies plus the given extras, a `latentserve[x]` self-reference expanded to extra x."""
    found, todo, seen = [], list(extras), set()
    found += [Requirement(r) for r in PROJECT["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(PROJECT["name"]):
                todo += sorted(requirement.extras)
            else:
                found.append(requirement)
    return [r for r in found if r.marker is None or r.marker.evaluate(TARGET)]


def unsatisfied(pins: dict[str, tuple[Version, int]], wanted: list[Requirement]) -> list[str]:
    problems = []
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{requirement} but the lock has {pins[name][0]}")
    return problems


@pytest.fixture(scope="module")
def locks() -> dict[str, dict[str, tuple[Version, int]]]:
    return {name: parse_lock((ROOT / f"requirements/{name}.txt").read_text()) for name in LOCKS}


@pytest.mark.parametrize("lock", list(LOCKS))
def test_lock_satisfies_pyproject(locks, lock):
    problems = unsatisfied(locks[lock], requirements(LOCKS[lock]))
    assert not problems, f"requirements/{lock}.txt is stale, run `make lock`: " + "; ".join(problems)


@pytest.mark.parametrize("lock", list(LOCKS))
def test_every_pin_has_hashes(locks, lock):
    assert locks[lock]
    assert [name for name, (_, hashes) in locks[lock].items() if hashes == 0] == []


def test_runtime_and_train_hold_the_dev_versions(locks):
    for lock in ("runtime", "train"):
        differ = {n: (str(v), str(locks["dev"].get(n, ("absent",))[0])) for n, (v, _) in locks[lock].items()
                  if locks["dev"].get(n, (None,))[0] != v}
        assert not differ, f"requirements/{lock}.txt differs from the dev lock the tests run on: {differ}"
    assert set(locks["runtime"]) <= set(locks["train"]) <= set(locks["dev"])
    assert not {"pytest", "pyro-ppl", "torchvision"} & set(locks["runtime"]), "a dev or train package in runtime"


def test_the_check_catches_a_stale_lock():
    pins = {"fastapi": (Version("0.100.0"), 2)}
    problems = unsatisfied(pins, [Requirement("fastapi>=0.115"), Requirement("orjson>=3.10")])
    assert len(problems) == 2 and "0.100.0" in problems[0] and "orjson" in problems[1]
    with pytest.raises(pytest.fail.Exception):
        parse_lock("fastapi>=0.115\n")


@pytest.mark.parametrize("package", ["fastapi", "starlette"])
def test_tests_run_on_the_locked_web_framework(locks, package):
    """service/routing.py reads `fastapi.routing._effective_route_context_var`, which no release promises to keep:
    the image must ship the FastAPI (and its Starlette) that tests/unit/test_routing.py passed on."""
    locked = locks["runtime"][package][0]
    assert Version(importlib.metadata.version(package)) == locked, f"run `make install` to get {package}=={locked}"


def _make_rules() -> dict[str, tuple[list[str], str]]:
    """Makefile target -> (prerequisites, recipe), with $(VAR) names left as written."""
    rules, target = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([$()A-Za-z_.-]+):(?!=)\s*(.*)$", line)
        if match:
            target = match[1]
            rules[target] = (match[2].split(), "")
        elif target and line.startswith("\t"):
            rules[target] = (rules[target][0], rules[target][1] + line + "\n")
        elif not line.strip():
            target = None
    return rules


def test_make_serve_installs_the_runtime_lock_only_and_test_the_dev_lock():
    rules = _make_rules()

    def installed(target: str, seen=()) -> str:
        prerequisites, recipe = rules.get(target, ([], ""))
        return recipe + "".join(installed(p, (*seen, target)) for p in prerequisites if p not in seen)

    assert "-r requirements/runtime.txt" in installed("serve") and "requirements/dev.txt" not in installed("serve")
    assert "-r requirements/dev.txt" in installed("test") and "-r requirements/dev.txt" in installed("install")
    assert "--require-hashes" in installed("test")


# Where the locks must install, as uv names the platforms: the image's and a CUDA Linux box, an ARM Linux box (a
# Graviton, a Raspberry Pi 5, a Jetson's userland), an Apple-silicon Mac.
PLATFORMS = {"linux-x86_64": "x86_64-manylinux_2_28", "linux-aarch64": "aarch64-manylinux_2_28",
             "macos-arm64": "aarch64-apple-darwin"}


def resolve(lock: Path, platform: str, target: Path) -> subprocess.CompletedProcess:
    """uv's dry run of `pip install --require-hashes -r lock` for another platform: it reads the index's metadata (and
    its cache), resolves every pin and its dependencies with the lock's markers, and downloads no wheel."""
    from uv import find_uv_bin

    command = [find_uv_bin(), "pip", "install", "--dry-run", "--require-hashes", "--no-build", "--native-tls",
               "--python", sys.executable, "--python-version", "3.11", "--python-platform", platform,
               "--target", str(target), "-r", str(lock)]
    # torch's macOS wheels need macOS 14 (uv assumes 13 unless told).
    env = {**os.environ, "NO_COLOR": "1", "MACOSX_DEPLOYMENT_TARGET": "14.0"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("platform", list(PLATFORMS))
@pytest.mark.parametrize("lock", list(LOCKS))
def test_lock_installs_on_each_platform(lock, platform, tmp_path):
    result = resolve(ROOT / f"requirements/{lock}.txt", PLATFORMS[platform], tmp_path)
    assert result.returncode == 0, f"requirements/{lock}.txt does not install on {platform}:\n{result.stderr}"
    planned = {line.split()[1].split("==")[0] for line in result.stderr.splitlines() if line.startswith(" + ")}
    assert {"torch", "fastapi", "fastapi-offline"} <= planned
    # The CUDA libraries come with the PyPI torch on Linux only.
    assert ("nvidia-cublas" in planned) == platform.startswith("linux")


def test_the_platform_check_catches_a_platform_without_wheels(tmp_path):
    """torch publishes no wheel for Intel Macs any more: the same check must say so (it is not a check that always
    passes)."""
    result = resolve(ROOT / "requirements/runtime.txt", "x86_64-apple-darwin", tmp_path)
    assert result.returncode != 0 and "torch" in result.stderr
