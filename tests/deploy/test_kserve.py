"""deploy/kserve: the ServingRuntime (our GPU image as KServe's custom predictor container, protocol v2) and the
InferenceService using it. Checked offline: every container and the predictor's pod fields against the Kubernetes
schemas of kubernetes-validate (strict), KServe's own fields structurally (the `kserve` package would downgrade
python-dateutil in this environment and ships no CRD schema), and both against the service: probes, port, settings."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.app import create_app
from service.auth import PUBLIC_PATHS
from service.settings import Settings
from tests.deploy.common import K8S_VERSIONS

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kserve" / "inference-service.yaml"
APP_PORT = Settings.model_fields["port"].default
SETTINGS_ENV = {(Settings.model_config["env_prefix"] + name).upper() for name in Settings.model_fields}
# The KServe fields these files use, as serving.kserve.io names them (kserve 0.21's V1alpha1ServingRuntimeSpec,
# V1beta1PredictorSpec and V1beta1ModelSpec); everything else must be a plain Kubernetes field.
RUNTIME_FIELDS = {"supportedModelFormats", "protocolVersions", "containers"}
PREDICTOR_FIELDS = {"model", "minReplicas", "maxReplicas"}
MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion"}
PROBES = {"startupProbe": "/v2/health/live", "livenessProbe": "/v2/health/live", "readinessProbe": "/v2/health/ready"}


@pytest.fixture(scope="module")
def kinds() -> dict[str, dict]:
    objects = list(yaml.safe_load_all(MANIFEST.read_text()))
    by_kind = {obj["kind"]: obj for obj in objects}
    assert len(by_kind) == len(objects) == 2
    return by_kind


def as_pod(pod_spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": pod_spec}


def kubernetes_parts(kinds: dict[str, dict]) -> list[dict]:
    """The runtime's containers and the predictor's pod fields (its model as a container) as Pods."""
    runtime, predictor = kinds["ServingRuntime"]["spec"], kinds["InferenceService"]["spec"]["predictor"]
    assert set(runtime) <= RUNTIME_FIELDS and set(predictor) >= {"model"}
    model = {k: v for k, v in predictor["model"].items() if k not in MODEL_FIELDS}
    pod = {k: v for k, v in predictor.items() if k not in PREDICTOR_FIELDS}
    return [as_pod({"containers": runtime["containers"]}), as_pod({**pod, "containers": [{"name": "m", **model}]})]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_containers_and_pod_fields_match_the_kubernetes_schemas(kinds, version):
    for pod in kubernetes_parts(kinds):
        kubernetes_validate.validate(pod, version, strict=True)


def test_validation_rejects_a_misspelt_probe(kinds):
    broken = copy.deepcopy(kinds)
    broken["ServingRuntime"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(kubernetes_parts(broken)[0], K8S_VERSIONS[0], strict=True)


def test_inference_service_asks_for_protocol_v2_on_our_runtime_and_one_gpu(kinds):
    runtime, isvc = kinds["ServingRuntime"], kinds["InferenceService"]
    assert (runtime["apiVersion"], isvc["apiVersion"]) == ("serving.kserve.io/v1alpha1", "serving.kserve.io/v1beta1")
    model = isvc["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2" and runtime["spec"]["protocolVersions"] == ["v2"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1 == model["resources"]["requests"]["nvidia.com/gpu"]
    assert isvc["spec"]["predictor"]["enableServiceLinks"] is False


def test_the_custom_container_is_the_gpu_image_probed_on_the_v2_health_routes(kinds):
    (container,) = kinds["ServingRuntime"]["spec"]["containers"]
    assert container["name"] == "kserve-container" and container["image"].split(":")[0] == "latentserve"
    assert [p["containerPort"] for p in container["ports"]] == [APP_PORT]
    assert {probe: container[probe]["httpGet"]["path"] for probe in PROBES} == PROBES
    assert {container[probe]["httpGet"]["port"] for probe in PROBES} == {APP_PORT}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LATENTSERVE_DEVICE"] == "cuda" and int(env["LATENTSERVE_PORT"]) == APP_PORT
    assert float(env["LATENTSERVE_POLL_S"]) > 0  # replicas follow the artifacts folder by themselves
    assert {n for n in env if n.startswith("LATENTSERVE_")} <= SETTINGS_ENV


def test_probe_paths_are_routes_of_the_app_that_need_no_key():
    paths = {route.path for route in create_app(Settings()).routes}
    assert set(PROBES.values()) <= paths & PUBLIC_PATHS
