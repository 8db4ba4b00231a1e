"""docs/deploy.md names files, commands and metrics that exist, and covers every deployment workflow."""

import re

from tests.deploy.common import ROOT

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def _deploy_section() -> str:
    return DEPLOY_DOC.read_text()


def test_every_repo_path_the_doc_names_exists():
    text = _deploy_section()
    paths = r"(?<![\w/])(?:deploy/\w+\.py|requirements/\w+\.txt)|deploy/kubernetes/\w+|docker-compose(?:\.cpu)?\.yml"
    named = set(re.findall(paths + r"|Dockerfile|\.dockerignore", text))
    assert "docker-compose.cpu.yml" in named and "deploy/kubernetes/gpu" in named
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, missing


def test_doc_covers_every_workflow():
    text = _deploy_section()
    for needle in ("docker build", "--gpus all", "--profile train", "POST localhost:8000/admin/reload",
                   "kubectl apply -k", "kubectl rollout", "Base image", "without downtime",
                   "make image-check", "make lock", "143"):
        assert needle in text, f"docs/deploy.md lacks {needle!r}"


def test_metric_names_the_doc_mentions_exist():
    from service.metrics import __file__ as metrics_file

    source = open(metrics_file).read()
    mentioned = _deploy_section() + (ROOT / "deploy/kubernetes/base/hpa.yaml").read_text()
    for name in set(re.findall(r"latentserve_[a-z_]+", mentioned)):
        assert f'"{name}' in source, f"{name} is not a metric of the service"


def test_the_grace_periods_the_doc_states_are_the_files():
    text = _deploy_section()
    stated = re.findall(r"`stop_grace_period: (\w+)`", text)
    actual = re.findall(r"^\s*stop_grace_period:\s*(\w+)\s*$", (ROOT / "docker-compose.yml").read_text(), re.M)
    assert stated and set(stated) == set(actual), (stated, actual)
    stated = re.findall(r"`terminationGracePeriodSeconds: (\d+)`", text)
    actual = set(re.findall(r"terminationGracePeriodSeconds:\s*(\d+)",
                            (ROOT / "deploy/kubernetes/base/deployment.yaml").read_text()))  # the overlays patch it
    assert stated and set(stated) == actual, (stated, actual)
