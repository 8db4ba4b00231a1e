"""The PNGs in an artifact's report/ folder: the test set in latent space, reconstructions beside originals, random
samples, for 2-D models the decoded latent grid, and draws of each digit where the model has a distribution per
digit. Matplotlib with the Agg backend; fixed seeds throughout."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from matplotlib.colors import ListedColormap  # noqa: E402

from lvm.networks import LatentModel  # noqa: E402
from lvm.reports import DIGIT_COLOURS  # noqa: E402

_SEED = 0
_ERRORBAR_POINTS = 150  # error bars on every one of 10,000 points would hide the map
_CLIP_PERCENT = 0.5  # the map's axes span the 0.5th to 99.5th percentile of the codes: outliers would squash the cloud
_MANIFOLD_TICKS = 5
DIGIT_CMAP = ListedColormap(DIGIT_COLOURS, name="digits")  # the explorer page's colours (lvm/reports.py)


def write_report(model: LatentModel, x: Tensor, y: Tensor, folder: Path, name: str | None = None) -> list[Path]:
    """Writes the report PNGs for the test images x (N, 784) with labels y into folder; returns their paths. Titles
    name the artifact (`name`, default the model's kind)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    title = name or model.kind
    with torch.no_grad():
        paths = [latent_map(model, x, y, folder / "latent.png", title),
                 reconstructions(model, x, folder / "reconstructions.png", title),
                 samples(model, folder / "samples.png", title=title)]
        if model.latent_dim == 2:
            paths.append(manifold(model, folder / "manifold.png", title=title))
        if model.digit_density() is not None:
            paths.append(digits(model, folder / "digits.png", title=title))
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _clipped_limits(values: Tensor) -> tuple[float, float]:
    """The central percentiles of values, widened by 5% on each side."""
    lo, hi = torch.quantile(values, torch.tensor([_CLIP_PERCENT / 100, 1 - _CLIP_PERCENT / 100])).tolist()
    pad = 0.05 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def latent_map(model: LatentModel, x: Tensor, y: Tensor, path: Path, title: str) -> Path:
    """Posterior means of x coloured by digit (first two dimensions), with ±1 sd bars on a subset where there is one;
    the axes are clipped to the central 99% of the codes."""
    z_loc, z_scale = model.encode(x, y)  # a conditional model is given each image's digit
    dims = min(2, model.latent_dim)
    fig, ax = plt.subplots(figsize=(7, 6))
    zy = z_loc[:, 1] if dims == 2 else torch.zeros(len(z_loc))
    points = ax.scatter(z_loc[:, 0], zy, c=y, cmap=DIGIT_CMAP, s=2, alpha=0.6, vmin=-0.5, vmax=9.5)
    if z_scale is not None:
        n = min(_ERRORBAR_POINTS, len(x))
        ax.errorbar(z_loc[:n, 0], zy[:n], xerr=z_scale[:n, 0], yerr=z_scale[:n, 1] if dims == 2 else None,
                    fmt="o", markersize=2, color="#444444", ecolor="#444444", elinewidth=1.0, capsize=1.5, alpha=0.8,
                    label=f"±1 sd ({n} images)")
        ax.legend(loc="upper right")
    ax.set_xlim(*_clipped_limits(z_loc[:, 0]))
    if dims == 2:
        ax.set_ylim(*_clipped_limits(zy))
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]" if dims == 2 else "")
    note = f" (first 2 of {model.latent_dim} dims)" if model.latent_dim > 2 else ""
    ax.set_title(f"{title}: test set in latent space{note}, axes at the central {100 - 2 * _CLIP_PERCENT:g}%")
    return _save(fig, path)


def _image_grid(images: Tensor, rows: int, cols: int) -> Tensor:
    """(rows*cols, 784) -> one (rows*28, cols*28) picture."""
    return images.reshape(rows, cols, 28, 28).permute(0, 2, 1, 3).reshape(rows * 28, cols * 28)


def _show(picture: Tensor, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(picture.shape[1] / 40, picture.shape[0] / 40 + 0.4))
    ax.imshow(picture.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    return _save(fig, path)


def reconstructions(model: LatentModel, x: Tensor, path: Path, title: str, n: int = 10) -> Path:
    """Rows of originals and, below each, its reconstruction from the posterior mean."""
    originals = x[: 2 * n]
    rebuilt = model.reconstruct(originals, torch.zeros(len(originals), model.latent_dim))[0]
    rows = torch.stack([originals[:n], rebuilt[:n], originals[n:], rebuilt[n:]]).reshape(-1, 784)
    return _show(_image_grid(rows, 4, n), f"{title}: originals (rows 1, 3) and reconstructions", path)


def samples(model: LatentModel, path: Path, n: int = 10, title: str | None = None) -> Path:
    """n x n images decoded from random draws of the prior."""
    eps = torch.randn(n * n, model.latent_dim, generator=torch.Generator().manual_seed(_SEED))
    return _show(_image_grid(model.sample(eps)[1], n, n), f"{title or model.kind}: random samples from the prior", path)


def digits(model: LatentModel, path: Path, n: int = 10, title: str | None = None) -> Path:
    """One row of n draws per digit 0-9, from each digit's latent distribution (model.sample_digits)."""
    g = torch.Generator().manual_seed(_SEED)
    eps = torch.randn(10 * n, model.latent_dim, generator=g)
    u = torch.rand(10 * n, generator=g)
    y = torch.arange(10).repeat_interleave(n)
    picture = _image_grid(model.sample_digits(y, eps, u)[1], 10, n)
    return _show(picture, f"{title or model.kind}: draws of each digit (rows 0-9)", path)


def manifold(model: LatentModel, path: Path, n: int = 20, title: str | None = None) -> Path:
    """The decoded grid of a 2-D latent space at the prior's quantiles 5% ... 95% along each axis, with the z value
    of every few cells on the axes."""
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    # Rows go from high z[1] at the top to low at the bottom, as on a plot's y axis.
    eps = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)
    z = model.prior_loc + eps @ model.prior_scale_tril.T
    picture = _image_grid(model.decode(z), n, n)
    fig, ax = plt.subplots(figsize=(picture.shape[1] / 40 + 0.8, picture.shape[0] / 40 + 0.8))
    ax.imshow(picture.numpy(), cmap="gray", vmin=0, vmax=1)
    cells = torch.linspace(0, n - 1, _MANIFOLD_TICKS).round().long()
    centres = (cells * 28 + 13.5).tolist()
    grid = z.reshape(n, n, 2)  # [row, column, dim]
    ax.set_xticks(centres, [f"{v:.2f}" for v in grid[0, cells, 0].tolist()])
    ax.set_yticks(centres, [f"{v:.2f}" for v in grid[cells, 0, 1].tolist()])
    ax.set_xlabel(f"z[0] ({grid[0, 0, 0]:.2f} to {grid[0, -1, 0]:.2f})")
    ax.set_ylabel(f"z[1] ({grid[-1, 0, 1]:.2f} to {grid[0, 0, 1]:.2f})")
    ax.set_title(f"{title or model.kind}: decoded latent grid (prior quantiles 5% to 95%)")
    return _save(fig, path)
