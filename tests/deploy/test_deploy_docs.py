"""docs/deploy.md (the README's Deploy section) names files and commands that exist."""

import re

from tests.deploy.conftest import ROOT

DOC = ROOT / "docs" / "deploy.md"


def test_every_repo_path_the_doc_names_exists():
    text = DOC.read_text()
    named = set(re.findall(r"(?:deploy/kubernetes/\w+|docker-compose(?:\.cpu)?\.yml|Dockerfile|\.dockerignore)", text))
    assert "docker-compose.cpu.yml" in named and "deploy/kubernetes/gpu" in named
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, missing


def test_doc_covers_every_workflow():
    text = DOC.read_text()
    for needle in ("docker build", "--gpus all", "--profile train", "POST localhost:8000/admin/reload",
                   "kubectl apply -k", "kubectl rollout", "Base image", "without downtime"):
        assert needle in text, f"docs/deploy.md lacks {needle!r}"


def test_metric_names_the_doc_mentions_exist():
    from service.metrics import __file__ as metrics_file

    source = open(metrics_file).read()
    mentioned = DOC.read_text() + (ROOT / "deploy/kubernetes/base/hpa.yaml").read_text()
    for name in set(re.findall(r"latentserve_[a-z_]+", mentioned)):
        assert f'"{name}' in source, f"{name} is not a metric of the service"
