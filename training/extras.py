"""The files an artifact carries beside its weights, each written by one step `step(context, folder)`: the report
PNGs, the test-set embedding (lvm.embedding) and the score reference (lvm.reference). `fit` and `derive` both write
STEPS; a new extra is one more step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lvm.embedding import compute_embedding, write_embedding
from lvm.networks import LatentModel
from lvm.reference import compute_reference, write_reference
from training.data import MNIST
from training.report import write_report

# The reference images: never fitted on (PPCA, the AE and the VAE fit on data.train; the validation split only
# picks the epoch), and disjoint from the test set, which stays held back for measuring the rule.
REFERENCE_IMAGES = "mnist validation split (training images held out of fitting)"


@dataclass(frozen=True)
class Context:
    model: LatentModel
    data: MNIST
    name: str


Step = Callable[[Context, Path], None]


def report_step(ctx: Context, folder: Path) -> None:
    write_report(ctx.model, ctx.data.test.x, ctx.data.test.y, folder / "report", ctx.name)


def embedding_step(ctx: Context, folder: Path) -> None:
    write_embedding(folder, compute_embedding(ctx.model, ctx.data.test.x, ctx.data.test.y))


def reference_step(ctx: Context, folder: Path) -> None:
    write_reference(folder, compute_reference(ctx.model, ctx.data.valid.x, REFERENCE_IMAGES))


STEPS: tuple[Step, ...] = (report_step, embedding_step, reference_step)


def writer(ctx: Context, steps: tuple[Step, ...] = STEPS) -> Callable[[Path], None]:
    """The write_extras function lvm.write_artifact calls: every step in order into the staging folder."""
    def write_extras(folder: Path) -> None:
        for step in steps:
            step(ctx, folder)

    return write_extras
