"""`python -m bench.quality` (make quality): how good the generated digits are, judged by an MNIST classifier this
script trains itself on the training set (an MLP, on the CPU, seeded), for every model under the artifacts folder:

- conditional accuracy: the share of draws of digit d (model.sample_digits) the classifier calls d, per digit and
  on average (DRAWS_PER_DIGIT draws each);
- diversity: the mean pairwise pixel distance (Euclidean, 784 pixels) of 50 draws of a digit over that of the first 50
  real test images of the digit, per digit (at least DIVERSITY_BAR: no collapse onto the digit's mean);
- unconditional quality: over 10,000 draws from the prior, the KL divergence of the classifier's label distribution
  from uniform and its mean confidence (max softmax), beside the same figures for the real test set.

An unconditional model whose artifact has no class density (versions written before it existed) gets one fitted here,
exactly as `python -m training derive --add classes` would; the table says so. The component counts M = 1 ... 4 are
compared too (conditional accuracy per M). Needs MNIST (--data-dir or MNIST_DIR) and the training extras (torch only:
no Pyro). Prints Markdown tables; --json writes every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

import lvm
from lvm.density import LABELS
from lvm.networks import LatentModel

REPO = Path(__file__).resolve().parents[1]
DRAWS_PER_DIGIT = 1000
DIVERSITY_DRAWS = 50
DIVERSITY_BAR = 0.35
PRIOR_DRAWS = 10_000
ACCURACY_BAR, DIGIT_BAR = 0.95, 0.85  # the default conditional path's targets (issue 23)
SEED = 0
PRIOR = "prior"  # accuracy_by_components' key for a conditional model's draws from its prior


# -- the judge ------------------------------------------------------------------------------------------------------

def train_classifier(x: Tensor, y: Tensor, epochs: int = 4, seed: int = SEED) -> nn.Module:
    """An MLP 784-256-128-10 trained with Adam on (x, y), in eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, LABELS))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 128):
            idx = order[start:start + 128]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval().requires_grad_(False)


def load_or_train(path: Path | None, data) -> nn.Module:
    import safetensors.torch

    if path is not None and path.is_file():
        judge = train_classifier(data.train.x[:1], data.train.y[:1], epochs=0)
        judge.load_state_dict(safetensors.torch.load_file(path))
        return judge
    judge = train_classifier(data.train.x, data.train.y)
    if path is not None:
        safetensors.torch.save_file(judge.state_dict(), path)
    return judge


@torch.no_grad()
def probabilities(judge: nn.Module, x: Tensor) -> Tensor:
    return torch.cat([torch.softmax(judge(x[i:i + 2000]), -1) for i in range(0, len(x), 2000)])


def label_figures(p: Tensor) -> dict:
    """KL(label distribution || uniform) in nats and mean confidence, from softmax rows p (N, 10)."""
    counts = torch.bincount(p.argmax(-1), minlength=LABELS).double()
    share = counts / counts.sum()
    nonzero = share[share > 0]
    kl = float((nonzero * (nonzero * LABELS).log()).sum())
    return {"label_kl_from_uniform": kl, "mean_confidence": float(p.max(-1).values.mean()),
            "label_share": [round(float(s), 4) for s in share]}


def mean_pairwise_distance(x: Tensor) -> float:
    d = torch.cdist(x.double(), x.double())
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


# -- one model -----------------------------------------------------------------------------------------------------

@dataclass
class ModelFigures:
    name: str
    version: int
    kind: str
    density: str  # where its per-digit distribution comes from
    accuracy: list[float] = field(default_factory=list)  # per digit
    diversity: list[float] = field(default_factory=list)  # ratio per digit
    prior: dict = field(default_factory=dict)
    accuracy_by_components: dict = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy) / len(self.accuracy) if self.accuracy else float("nan")


def draws(model: LatentModel, digit: int, n: int, seed: int) -> Tensor:
    """n seeded draws of `digit` (-1: from the prior), pixel means (n, 784)."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, model.latent_dim, generator=g)
    u = torch.rand(n, generator=g)
    with torch.no_grad():
        return model.sample_digits(torch.full((n,), digit, dtype=torch.long), eps, u)[1]


def conditional_accuracy(model: LatentModel, judge: nn.Module) -> list[float]:
    return [float((probabilities(judge, draws(model, d, DRAWS_PER_DIGIT, SEED + d)).argmax(-1) == d).double().mean())
            for d in range(LABELS)]


def measure_model(artifact: lvm.Artifact, judge: nn.Module, data, real_spread: list[float]) -> ModelFigures:
    from training.classes import CANDIDATES, class_density_for, fit_class_density

    model = artifact.build()
    if model.conditional and model.class_density is None:
        density = "native (p(x | z, y), z ~ N(0, I))"
    elif model.conditional:
        density = f"artifact's classes.safetensors (M = {model.class_density.components}), its codes given the digit"
    elif model.class_density is not None:
        density = f"artifact's classes.safetensors (M = {model.class_density.components})"
    else:
        model.class_density, record = class_density_for(model, data.train.x, data.train.y, data.valid.x, data.valid.y)
        density = f"fitted here as `derive --add classes` would (M = {record['components']})"
    figures = ModelFigures(artifact.name, artifact.version, artifact.kind, density)
    figures.accuracy = conditional_accuracy(model, judge)
    for d in range(LABELS):
        spread = mean_pairwise_distance(draws(model, d, DIVERSITY_DRAWS, 100 + d))
        figures.diversity.append(spread / real_spread[d])
    figures.prior = label_figures(probabilities(judge, draws(model, -1, PRIOR_DRAWS, 999)))
    from lvm.embedding import compute_embedding

    z = torch.from_numpy(compute_embedding(model, data.train.x, data.train.y).mean)  # the cvae's given the digit
    chosen = model.class_density
    for m in CANDIDATES:
        model.class_density = fit_class_density(z, data.train.y, m)
        acc = conditional_accuracy(model, judge)
        figures.accuracy_by_components[m] = (sum(acc) / LABELS, min(acc))
    if model.conditional:  # and its own prior, every digit's N(0, I)
        model.class_density = None
        acc = conditional_accuracy(model, judge)
        figures.accuracy_by_components[PRIOR] = (sum(acc) / LABELS, min(acc))
    model.class_density = chosen
    return figures


# -- the report ----------------------------------------------------------------------------------------------------

def latest_versions(root: Path, names: list[str] | None) -> list[Path]:
    latest: dict[str, Path] = {}
    for name, _, path in lvm.scan(root):
        if names is None or name in names:
            latest[name] = path
    return [latest[n] for n in sorted(latest)]


def markdown(judge_accuracy: float, judge_s: float, real: dict, models: list[ModelFigures], when: str) -> str:
    lines = [f"Judge: MLP 784-256-128-10 trained by the script on the 55,000 training images in {judge_s:.0f} s, "
             f"test accuracy **{judge_accuracy:.4f}** ({when}).", "",
             "Conditional accuracy (share of {} draws of each digit the judge calls that digit):".format(
                 DRAWS_PER_DIGIT), "",
             "| model | digit distribution | " + " | ".join(str(d) for d in range(LABELS)) + " | mean | min |",
             "| --- | --- | " + " | ".join("---" for _ in range(LABELS)) + " | --- | --- |"]
    for f in models:
        lines.append(f"| {f.name}/{f.version} ({f.kind}) | {f.density} | "
                     + " | ".join(f"{a:.3f}" for a in f.accuracy) + f" | **{f.mean_accuracy:.3f}** | "
                     f"{min(f.accuracy):.3f} |")
    lines += ["", f"Diversity: mean pairwise pixel distance of {DIVERSITY_DRAWS} draws of a digit over that of the "
              f"first {DIVERSITY_DRAWS} real test images of the digit (bar >= {DIVERSITY_BAR}):", "",
              "| model | " + " | ".join(str(d) for d in range(LABELS)) + " | min |",
              "| --- | " + " | ".join("---" for _ in range(LABELS)) + " | --- |"]
    for f in models:
        lines.append(f"| {f.name}/{f.version} | " + " | ".join(f"{r:.2f}" for r in f.diversity)
                     + f" | **{min(f.diversity):.2f}** |")
    lines += ["", f"Unconditional draws ({PRIOR_DRAWS:,} from the prior; the cvae draws its digit uniformly):", "",
              "| source | KL(labels ‖ uniform), nats | mean confidence | label shares 0-9 |", "| --- | --- | --- | --- |",
              f"| real test images (10,000) | {real['label_kl_from_uniform']:.4f} | {real['mean_confidence']:.3f} | "
              + " ".join(f"{s:.3f}" for s in real["label_share"]) + " |"]
    for f in models:
        p = f.prior
        lines.append(f"| {f.name}/{f.version} | {p['label_kl_from_uniform']:.4f} | {p['mean_confidence']:.3f} | "
                     + " ".join(f"{s:.3f}" for s in p["label_share"]) + " |")
    by_m = [f for f in models if f.accuracy_by_components]
    if by_m:
        ms = list(dict.fromkeys(m for f in by_m for m in f.accuracy_by_components))
        lines += ["", "Gaussian or mixture: conditional accuracy mean / worst digit per number of components M "
                  "of each digit's mixture (for the cvae, also its prior N(0, I)):", "",
                  "| model | " + " | ".join(f"M = {m}" if m != PRIOR else "prior N(0, I)" for m in ms) + " |",
                  "| --- | " + " | ".join("---" for _ in ms) + " |"]
        for f in by_m:
            cells = [f.accuracy_by_components.get(m) for m in ms]
            lines.append(f"| {f.name}/{f.version} | " + " | ".join(
                "-" if c is None else f"{c[0]:.3f} / {c[1]:.3f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts-dir", type=Path, default=REPO / "artifacts")
    p.add_argument("--models", nargs="+", help="model names (default: every model; each at its highest version)")
    p.add_argument("--data-dir", type=Path, help="folder with the four MNIST IDX files (default: $MNIST_DIR)")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--judge", type=Path, help="a .safetensors file: load the judge from it when it exists, else "
                   "train it and save it there (the judge is seeded: reusing it changes no figure)")
    args = p.parse_args(argv)
    from training.data import load_mnist

    torch.set_num_threads(args.threads)
    data = load_mnist(args.data_dir)
    started = time.perf_counter()
    judge = load_or_train(args.judge, data)
    judge_s = time.perf_counter() - started
    real_p = probabilities(judge, data.test.x)
    judge_accuracy = float((real_p.argmax(-1) == data.test.y).double().mean())
    print(f"judge: test accuracy {judge_accuracy:.4f} after {judge_s:.0f} s", file=sys.stderr)
    real_spread = [mean_pairwise_distance(data.test.x[data.test.y == d][:DIVERSITY_DRAWS]) for d in range(LABELS)]
    models = []
    for path in latest_versions(args.artifacts_dir, args.models):
        figures = measure_model(lvm.load_artifact(path), judge, data, real_spread)
        print(f"{figures.name}/{figures.version}: mean accuracy {figures.mean_accuracy:.3f}", file=sys.stderr)
        models.append(figures)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(markdown(judge_accuracy, judge_s, label_figures(real_p), models, when))
    if args.json:
        args.json.write_text(json.dumps({"judge_accuracy": judge_accuracy, "judge_s": judge_s, "when": when,
                                         "real": label_figures(real_p), "real_spread": real_spread,
                                         "models": [vars(f) for f in models]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
