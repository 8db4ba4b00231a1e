"""deploy/kubernetes: each variant (an overlay patching the base) rendered by a real kustomize, validated offline
against the Kubernetes schemas of kubernetes-validate, then checked against the service: probes, port, settings, GPU
request, drain timing, selectors."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from tests.deploy.common import (
    APP_PORT,
    DEPLOYED_NOT_DEFAULT,
    DOCKERFILE,
    K8S_VERSIONS,
    ROOT,
    coerce_setting,
    drain_bound_s,
    kustomize,
    parse_dockerfile,
    setting_env_names,
)

K8S = ROOT / "deploy" / "kubernetes"
VARIANTS = ["gpu", "cpu"]


def _by_kind(objects: list[dict]) -> dict[str, dict]:
    kinds = {}
    for obj in objects:
        assert obj["kind"] not in kinds, f"two {obj['kind']} objects"
        kinds[obj["kind"]] = obj
    return kinds


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request) -> tuple[str, dict[str, dict]]:
    return request.param, _by_kind(kustomize(K8S / request.param))


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
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        entries = kustomization.get("resources", []) + [p["path"] for p in kustomization.get("patches", [])]
        used |= {(folder / entry).resolve() for entry in entries}
    assert files and files <= used, f"manifests no variant applies: {sorted(map(str, files - used))}"


def test_the_overlays_patch_the_base_deployment_rather_than_copy_it():
    for name in VARIANTS:
        kustomization = yaml.safe_load((K8S / name / "kustomization.yaml").read_text())
        assert kustomization["resources"] == ["../base"], name
        for patch in kustomization["patches"]:
            text = (K8S / name / patch["path"]).read_text()
            assert "Probe" not in text and "securityContext" not in text, f"{name}: copies the base pod"


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
            expected = DEPLOYED_NOT_DEFAULT.get(key, coerce_setting(key, None))
            assert coerce_setting(key, value) == expected, f"{key}={value!r} is not {expected!r}"
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
    _, kinds = variant
    uid = int(parse_dockerfile(DOCKERFILE.read_text())[0][-1].last("USER").args.split(":")[0])
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
    container = _container(kinds)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


def test_variants_differ_only_where_they_should():
    gpu, cpu = (_by_kind(kustomize(K8S / v)) for v in VARIANTS)
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
