"""Shared by the deploy checks (imported by them; the `dockerfile` fixture is in conftest.py): the repo root, the
service's settings as environment variables, the Dockerfile parsed into stages, a health-check command run against a
stand-in server, the dev tools (hadolint, check-jsonschema) found in the virtualenv, and kustomize. Nothing here needs
Docker."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
APP_PORT = 8000
# The oldest and newest releases that kubernetes-validate ships schemas for and that we promise to run on.
K8S_VERSIONS = ["1.30.0", "1.37.0"]


def tool(name: str) -> str:
    """The path of a dev tool; a missing one fails the test with how to get it (it is in pyproject's dev extra)."""
    found = Path(sys.executable).parent / name
    if found.is_file():
        return str(found)
    which = shutil.which(name)
    if which is None:
        pytest.fail(f"`{name}` not found: run `make install` (pip install -e '.[dev]' installs it)")
    return which


def settings_class():
    """service.settings.Settings; the deploy files must list exactly its fields."""
    from service.settings import Settings

    return Settings


def setting_env_names() -> dict[str, str]:
    """Environment variable name -> field name, for every field of Settings."""
    settings = settings_class()
    prefix = settings.model_config.get("env_prefix", "")
    return {(prefix + name).upper(): name for name in settings.model_fields}


def coerce_setting(env_name: str, value: str | None):
    """The value Settings would hold if env_name were set to value (None: unset, so the default)."""
    settings = settings_class()
    name = setting_env_names()[env_name]
    if value is None:
        return settings.model_fields[name].get_default(call_default_factory=True)
    # Validating through the model applies the same coercion as reading the environment.
    return getattr(settings.model_validate({name: value}), name)


# Settings the deployment files turn on deliberately, away from the service's default (make serve keeps it): each
# replica follows the shared artifacts folder by itself (docs/deploy.md).
DEPLOYED_NOT_DEFAULT = {"LATENTSERVE_POLL_S": 5.0}


def setting_default(env_name: str):
    return coerce_setting(env_name, None)


def drain_bound_s() -> float:
    """The longest a request already received can keep a stopping server busy: the sum of every *_s timeout."""
    settings = settings_class()
    return sum(float(f.get_default()) for n, f in settings.model_fields.items() if n.endswith("_s"))


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT/RUN, None for shell form."""
        text = self.args.strip()
        return json.loads(text) if text.startswith("[") else None

    def flags(self) -> tuple[dict[str, str], list[str]]:
        """Leading --flag=value options and the remaining words (shell-split)."""
        words = shlex.split(self.args)
        opts = {}
        while words and words[0].startswith("--"):
            key, _, value = words.pop(0)[2:].partition("=")
            opts[key] = value
        return opts, words


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[list[Stage], dict[str, str]]:
    """Stages in order and the global ARGs. Continuations are joined and comment lines dropped, as Docker does."""
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.lstrip().startswith("#") or (not raw.strip() and not buffer):
            continue
        if not buffer:
            start = number
        if raw.rstrip().endswith("\\"):
            buffer += raw.rstrip()[:-1]
            continue
        logical.append((start, buffer + raw))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a line continuation"
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for number, line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif not stages:
            assert keyword == "ARG", f"line {number}: {keyword} before the first FROM"
            key, _, value = args.partition("=")
            global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip(), number))
    return stages, global_args


def env_of(stages: list[Stage], target: str) -> dict[str, str]:
    """ENV values seen in a stage, following FROM <earlier stage> chains (only the `K=V` form is used here)."""
    by_name = {s.name: s for s in stages}
    chain, stage = [], by_name[target]
    while stage is not None:
        chain.append(stage)
        stage = by_name.get(stage.base)
    env: dict[str, str] = {}
    for stage in reversed(chain):
        for instruction in stage.all("ENV"):
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, f"line {instruction.line}: use ENV KEY=value"
                env[key] = value
    return env


def interpolation_default(value: object) -> tuple[str | None, str | None]:
    """('VAR', 'default') for a Compose `${VAR:-default}` value, (None, value) for a literal."""
    if value is None:
        return None, None
    match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}", str(value))
    return (match[1], match[2]) if match else (None, str(value))


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


def healthcheck_exit_code(argv: list[str], status: int) -> int:
    """Runs a health-check command (exec form, `python` first) against a local server answering /healthz."""
    handler = type("H", (_Handler,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "LATENTSERVE_PORT": str(server.server_address[1])}
        assert argv[0] == "python", "the slim image has python, not curl"
        return subprocess.run([sys.executable, *argv[1:]], env=env, timeout=20).returncode
    finally:
        server.shutdown()
        server.server_close()


def kustomize(folder: Path) -> list[dict]:
    """The objects `kubectl apply -k folder` would apply, rendered by a real kustomize: `kustomize build`, else
    `kubectl kustomize`. Skips without one that renders `patches` (kustomize v4 or later; Debian bookworm's
    kubernetes-client is kubectl 1.20, whose kustomize 2.0.3 cannot)."""
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(folder)]
    elif shutil.which("kubectl"):
        version = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True,
                                 timeout=60)
        embedded = json.loads(version.stdout or "{}").get("kustomizeVersion") if not version.returncode else None
        if embedded is None or int(embedded.lstrip("v").split(".")[0]) < 4:  # kubectl < 1.24 does not report it
            pytest.skip(f"kubectl's kustomize is {embedded or 'too old'}; rendering the overlays needs v4 or later")
        command = ["kubectl", "kustomize", str(folder)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed (.ci/run says where they come from)")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    return list(yaml.safe_load_all(done.stdout))
