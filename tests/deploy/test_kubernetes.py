"""deploy/kubernetes: each variant rendered as `kubectl apply -k` would (resources and images, the only kustomize
features used), validated offline against the Kubernetes schemas of kubernetes-validate, then checked against the
service: probes, port, settings, GPU request, drain timing, selectors."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import APP_PORT, ROOT, coerce_setting, drain_bound_s, setting_env_names

K8S = ROOT / "deploy" / "kubernetes"
VARIANTS = ["gpu", "cpu"]
# The oldest and newest releases that kubernetes-validate ships schemas for and that we promise to run on.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
_KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "images"}


def render(folder: Path) -> list[dict]:
    """The objects `kustomize build folder` would emit, for the subset of kustomize these files use."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZE_KEYS
    assert not unknown, f"{folder}: kustomize fields {unknown} are not rendered by this test; extend render()"
    objects = []
    for entry in kustomization["resources"]:
        path = (folder / entry).resolve()
        objects += render(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return objects


def _by_kind(objects: list[dict]) -> dict[str, dict]:
    kinds = {}
    for obj in objects:
        assert obj["kind"] not in kinds, f"two {obj['kind']} objects"
        kinds[obj["kind"]] = obj
    return kinds


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request) -> tuple[str, dict[str, dict]]:
    return request.param, _by_kind(render(K8S / request.param))


def _container(kinds: dict[str, dict]) -> dict:
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_objects_match_the_kubernetes_schemas(variant, version):
    name, kinds = variant
    assert set(kinds) == {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for obj in kinds.values():
        kubernetes_validate.validate(obj, version, strict=True)


def test_every_manifest_is_part_of_a_variant():
    files = {p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    used = set()
    for folder in {p.parent for p in K8S.rglob("kustomization.yaml")}:
        used |= {(folder / r).resolve() for r in yaml.safe_load((folder / "kustomization.yaml").read_text())[
            "resources"]}
    assert files and files <= used, f"manifests no variant applies: {sorted(map(str, files - used))}"


def test_validation_rejects_a_misspelt_field(variant):
    _, kinds = variant
    broken = copy.deepcopy(kinds["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_probes_hit_the_apps_endpoints_on_its_port(variant):
    _, kinds = variant
    container = _container(kinds)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": APP_PORT}
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert {probe: container[probe]["httpGet"]["path"] for probe in expected} == expected
    for probe in expected:
        assert container[probe]["httpGet"]["port"] in ("http", APP_PORT)
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] in ("http", APP_PORT)


def test_configmap_lists_every_setting_but_the_secret(variant):
    _, kinds = variant
    data = kinds["ConfigMap"]["data"]
    container = _container(kinds)
    from_secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert from_secrets == {"LATENTSERVE_API_KEY"}
    # The keys file's path is the Deployment's: where it mounts the Secret `latentserve-api-keys`.
    keys_file = {e["name"]: e.get("value") for e in container["env"]}.get("LATENTSERVE_API_KEYS_FILE")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert keys_file == mounts["api-keys"] + "/keys"
    secrets = {v["name"]: v["secret"]["secretName"] for v in kinds["Deployment"]["spec"]["template"]["spec"]["volumes"]
               if "secret" in v}
    assert secrets == {"api-keys": "latentserve-api-keys"}
    from_secrets |= {"LATENTSERVE_API_KEYS_FILE"}
    assert set(data) | from_secrets == set(setting_env_names()), "must list exactly service.settings.Settings"
    assert not set(data) & from_secrets
    for key, value in data.items():
        if key != "LATENTSERVE_ARTIFACTS_DIR":
            assert coerce_setting(key, value) == coerce_setting(key, None), f"{key}={value!r} is not the default"
    assert int(data["LATENTSERVE_PORT"]) == APP_PORT
    assert {"configMapRef": {"name": kinds["ConfigMap"]["metadata"]["name"]}} in container["envFrom"]
    overrides = {e["name"] for e in container["env"] if e["name"].startswith("LATENTSERVE_")}
    assert overrides <= set(setting_env_names())


def test_pod_never_gets_service_link_variables(variant):
    # A Service named latentserve would set LATENTSERVE_PORT=tcp://..., clobbering the setting of that name.
    _, kinds = variant
    assert kinds["Deployment"]["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_termination_grace_covers_prestop_and_drain(variant):
    _, kinds = variant
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    command = _container(kinds)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    assert pre_stop_s >= 5, "kube-proxy and ingresses need a few seconds to drop the pod"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + drain_bound_s() + 10


def test_resources_requests_and_limits(variant):
    name, kinds = variant
    container = _container(kinds)
    resources = container["resources"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[part]), f"{name}: {part} needs cpu and memory"
    env = {e["name"]: e.get("value") for e in container["env"]}
    if name == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert env["LATENTSERVE_DEVICE"] == "cuda"
    else:
        assert not any("gpu" in key for part in resources.values() for key in part)
        assert env["LATENTSERVE_DEVICE"] == "cpu"
        # torch's thread count follows the node's cores, not the pod's CPU limit, unless told.
        assert int(env["LATENTSERVE_TORCH_THREADS"]) == int(resources["limits"]["cpu"])


def test_selectors_and_references_agree(variant):
    _, kinds = variant
    deployment = kinds["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert kinds["Service"]["spec"]["selector"].items() <= labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    min_replicas = kinds["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    assert min_replicas > kinds["PodDisruptionBudget"]["spec"]["minAvailable"], "a drain would have to wait"


def test_rollouts_never_drop_below_the_ready_replicas(variant):
    _, kinds = variant
    rolling = kinds["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1


def test_pod_runs_as_the_images_user_with_a_read_only_root(variant):
    from tests.deploy.conftest import DOCKERFILE, parse_dockerfile

    _, kinds = variant
    uid = int(parse_dockerfile(DOCKERFILE.read_text())[0][-1].last("USER").args.split(":")[0])
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
    container = _container(kinds)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


def test_variants_differ_only_where_they_should():
    gpu, cpu = (_by_kind(render(K8S / v)) for v in VARIANTS)
    assert {k: v for k, v in gpu.items() if k != "Deployment"} == {k: v for k, v in cpu.items() if k != "Deployment"}

    def shared(kinds):
        deployment = copy.deepcopy(kinds["Deployment"])
        pod = deployment["spec"]["template"]["spec"]
        pod.pop("tolerations", None)
        container = pod["containers"][0]
        container.pop("resources")
        container["env"] = [e for e in container["env"]
                            if e["name"] not in {"LATENTSERVE_DEVICE", "LATENTSERVE_TORCH_THREADS"}]
        return deployment

    assert shared(gpu) == shared(cpu)
