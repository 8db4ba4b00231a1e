"""Which artifacts a run serves: the committed ones when artifacts/ has a vae, else random-init stand-ins (784-128-128-2
AE and VAE, the notebook's recipe, smaller than training's 512-256 default; a random PPCA) written once into a scratch
folder."""

from __future__ import annotations

from pathlib import Path

import torch

from lvm.artifact import list_versions, load_artifact, write_artifact
from lvm.networks import PPCA, LatentModel, MLPModel

DEFAULT_HIDDEN = [128, 128]
LATENT_DIM = 2


def has_model(root: Path, name: str = "vae") -> bool:
    return bool(list_versions(Path(root) / name))


def ensure(root: Path, scratch: Path) -> tuple[Path, str]:
    """(artifacts folder to serve, a sentence saying what it holds)."""
    if has_model(root):
        return root, f"committed artifacts in {_shown(root)}"
    if not has_model(scratch):
        for name, model in _random_models().items():
            write_artifact(scratch, name, model, _MANIFEST)
    return scratch, f"random-init stand-ins ({_shown(root)} holds no vae yet)"


def _shown(path: Path) -> str:
    """The folder relative to the repository, so that no machine's absolute path lands in BENCHMARKS.md."""
    repo = Path(__file__).resolve().parent.parent
    resolved = Path(path).resolve()
    return resolved.relative_to(repo).as_posix() if resolved.is_relative_to(repo) else resolved.name


def _random_models() -> dict[str, LatentModel]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    W = torch.randn(784, LATENT_DIM, generator=g) * 0.1
    mu = torch.rand(784, generator=g) * 0.5
    return {"pca": PPCA(W, mu, torch.tensor(0.05)),
            "ae": MLPModel("ae", LATENT_DIM, DEFAULT_HIDDEN),
            "vae": MLPModel("vae", LATENT_DIM, DEFAULT_HIDDEN)}


# What write_artifact asks of its caller; the model describes itself (kind, likelihood, architecture).
_MANIFEST = {
    "training": {"note": "random initialisation for the benchmark; not trained", "seed": 0},
    "data": {"dataset": "none"},
    "metrics": {},
    "software": {"torch": torch.__version__},
}


def latest_vae(root: Path) -> tuple[LatentModel, str]:
    """The model the service serves by default (highest vae version), or a random-init one of the same shape."""
    versions = list_versions(Path(root) / "vae")
    if versions:
        path = Path(root) / "vae" / str(versions[-1])
        return load_artifact(path).build(), f"vae v{versions[-1]} from {Path(root).name}/vae/{versions[-1]}"  # no machine path in docs
    torch.manual_seed(0)
    model = MLPModel("vae", LATENT_DIM, DEFAULT_HIDDEN).eval().requires_grad_(False)
    return model, "random-init MLPModel vae 784-128-128-2"
