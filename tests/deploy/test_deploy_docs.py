"""The README's Deploy section (from "## Deploy" to the next "## " heading) names files and commands that exist."""

import re

from tests.deploy.conftest import ROOT

README = ROOT / "README.md"


def _deploy_section() -> str:
    match = re.search(r"^## Deploy\n(.*?)(?=^## |\Z)", README.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Deploy' section"
    return match.group(1)


def test_every_repo_path_the_doc_names_exists():
    text = _deploy_section()
    named = set(re.findall(r"(?:deploy/kubernetes/\w+|docker-compose(?:\.cpu)?\.yml|Dockerfile|\.dockerignore)", text))
    assert "docker-compose.cpu.yml" in named and "deploy/kubernetes/gpu" in named
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, missing


def test_doc_covers_every_workflow():
    text = _deploy_section()
    for needle in ("docker build", "--gpus all", "--profile train", "POST localhost:8000/admin/reload",
                   "kubectl apply -k", "kubectl rollout", "Base image", "without downtime"):
        assert needle in text, f"README.md's Deploy section lacks {needle!r}"


def test_metric_names_the_doc_mentions_exist():
    from service.metrics import __file__ as metrics_file

    source = open(metrics_file).read()
    mentioned = _deploy_section() + (ROOT / "deploy/kubernetes/base/hpa.yaml").read_text()
    for name in set(re.findall(r"latentserve_[a-z_]+", mentioned)):
        assert f'"{name}' in source, f"{name} is not a metric of the service"
