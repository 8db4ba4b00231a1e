"""docker-compose.yml and its CPU override against the Compose Specification schema (the copy that check-jsonschema
vendors, `vendor.compose-spec`), and against the service: settings, port, health check, volumes, stop grace."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from importlib import resources

import jsonschema
import pytest
import yaml

from tests.deploy.common import (
    APP_PORT,
    DEPLOYED_NOT_DEFAULT,
    ROOT,
    coerce_setting,
    drain_bound_s,
    env_of,
    interpolation_default,
    setting_default,
    setting_env_names,
    healthcheck_exit_code,
    tool,
)

COMPOSE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"


class _ComposeLoader(yaml.SafeLoader):
    """Reads Compose's `!reset` merge tag into a marker the tests can see (plain YAML loaders reject it)."""


class Reset(list):
    pass


_ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def _load(path):
    return yaml.load(path.read_text(), Loader=_ComposeLoader)


def _schema() -> dict:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def _errors(document) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema())
    plain = json.loads(json.dumps(document))  # Reset markers become plain lists
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(plain)]


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def stages():
    from tests.deploy.common import DOCKERFILE, parse_dockerfile

    return parse_dockerfile(DOCKERFILE.read_text())[0]


def test_compose_file_passes_check_jsonschema():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_override_matches_the_schema():
    assert _errors(_load(CPU_OVERRIDE)) == []


def test_schema_rejects_a_broken_file(compose):
    misspelt = copy.deepcopy(compose)
    misspelt["services"]["api"]["healthchek"] = misspelt["services"]["api"].pop("healthcheck")
    assert _errors(misspelt)
    mistyped = copy.deepcopy(compose)
    mistyped["services"]["api"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    assert _errors(mistyped)


def test_api_lists_every_setting_at_its_default(compose, stages):
    environment = compose["services"]["api"]["environment"]
    assert set(environment) == set(setting_env_names()), "environment must list exactly service.settings.Settings"
    image_env = env_of(stages, "runtime")
    for key, value in environment.items():
        var, literal = interpolation_default(value)
        assert var in (None, key), f"{key}: interpolates ${{{var}}}, a different variable"
        expected = (coerce_setting(key, image_env[key]) if key in image_env
                    else DEPLOYED_NOT_DEFAULT.get(key, setting_default(key)))
        assert coerce_setting(key, literal) == expected, f"{key}={value!r} is not the default {expected!r}"


def test_api_serves_on_the_app_port_with_a_gpu(compose):
    api = compose["services"]["api"]
    assert api["build"]["target"] == "runtime"
    assert [str(p) for p in api["ports"]] == [f"{APP_PORT}:{APP_PORT}"]
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert api["restart"] in {"unless-stopped", "always", "on-failure"}


def test_api_healthcheck_probes_healthz(compose):
    test = compose["services"]["api"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert healthcheck_exit_code(test[1:], 200) == 0
    assert healthcheck_exit_code(test[1:], 500) != 0


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_stop_grace_outlasts_the_drain(compose):
    grace = _seconds(compose["services"]["api"]["stop_grace_period"])
    assert grace >= drain_bound_s() + 10, f"stop_grace_period {grace}s leaves no room to drain"


def _mount(service: dict, target: str) -> str:
    # short syntax SOURCE:TARGET[:MODE]; SOURCE may hold a ${VAR:-default} with a colon of its own
    split = [re.fullmatch(r"(.+):(/[^:]*)(?::(?:ro|rw))?", v).groups() for v in service["volumes"]]
    sources = [source for source, mounted in split if mounted == target]
    assert sources, f"nothing mounted at {target}"
    return sources[0]


def test_train_writes_into_the_volume_the_api_serves(compose, stages):
    api, train = compose["services"]["api"], compose["services"]["train"]
    artifacts_dir = compose["services"]["api"]["environment"]["LATENTSERVE_ARTIFACTS_DIR"]
    volume = _mount(api, artifacts_dir)
    assert volume in compose["volumes"], "a named volume, so Docker seeds it from the image"
    assert _mount(train, artifacts_dir) == volume
    assert train["profiles"] == ["train"] and train["build"]["target"] == "train"
    assert train["command"][0] == "fit"
    written = train["command"][train["command"].index("--artifacts-dir") + 1]
    assert written == artifacts_dir
    mnist = train["environment"]["MNIST_DIR"]
    assert _mount(train, mnist), "MNIST_DIR must be a mounted folder"
    assert {s.name for s in stages} >= {api["build"]["target"], train["build"]["target"]}


def test_cpu_override_drops_every_gpu_reservation(compose):
    override = _load(CPU_OVERRIDE)
    with_gpu = {name for name, s in compose["services"].items() if "deploy" in s}
    for name in with_gpu:
        devices = override["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert isinstance(devices, Reset), f"{name}: the override must `!reset` the GPU reservation"
    assert override["services"]["api"]["environment"] == {"LATENTSERVE_DEVICE": "cpu"}
