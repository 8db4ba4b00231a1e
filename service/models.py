"""One loaded (name, version): the network on its device, one batcher per operation of service/operations.py's
table, and the warm-up that picks each operation's batch size. Noise is drawn from the keys in the rows (on the
compute thread), so a batch function is deterministic given its rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lvm import Artifact, LatentModel
from lvm.reference import OutlierRule, Reference, has_reference, read_reference
from service.batcher import Batcher, BatchObserver
from service.device import Placement
from service.operations import OPERATIONS, Operation
from service.runtime import Runtime


def batch_fn(op: Operation, served: ServedModel):
    """The batcher's function for one operation: packed rows in, the operation's outputs (numpy) out."""
    compute, prepare, latent_dim, placement = op.compute(served), op.prepare, served.latent_dim, served.placement

    def run(parts: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        if prepare is not None:
            parts = [prepare(np.concatenate(parts) if len(parts) > 1 else parts[0], latent_dim)]
        with torch.inference_mode():
            return placement.fetch(compute(placement.stage(parts)))

    return run


# Past the largest batch size whose pass fits max_pass_s, sizes keep doubling while that saves at least this share of
# the time per row (service.models.choose_batch_size).
ECONOMY = 0.1


def warmup_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to max_batch_size (included): the batch sizes a version will mostly see."""
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return sizes + [max_batch_size]


def choose_batch_size(pass_s: dict[int, float], max_pass_s: float) -> int:
    """The largest batch size whose pass took at most max_pass_s (the smallest one if none did), then doubled while
    each doubling still saves ECONOMY of the time per row; the largest size when max_pass_s is 0 (the rule off).

    One compute thread serves every queue on a device, so a pass holds up every other model and operation there:
    the bound keeps that wait short on a CPU, while on a GPU, where passes take microseconds, sizes go to the cap.
    Rows that are dear on their own (/score's images with their importance samples) fill the bound with one or two
    rows, where the fixed cost of a pass still counts: one VAE score row a pass cost 1.6 x its cost eight at a time
    (BENCHMARKS.md, "score"), so such a queue takes longer passes rather than lose a third of its throughput.
    """
    sizes = sorted(pass_s)
    if max_pass_s <= 0:
        return sizes[-1]
    fitting = [size for size in sizes if pass_s[size] <= max_pass_s]
    chosen = fitting[-1] if fitting else sizes[0]
    for size in (size for size in sizes if size > chosen):
        if pass_s[size] / size > (1 - ECONOMY) * pass_s[chosen] / chosen:
            break
        chosen = size
    return chosen


@dataclass
class ServedModel:
    """A loaded version; `batchers` exist once `start` ran on the event loop."""

    artifact: Artifact
    model: LatentModel
    placement: Placement
    batchers: dict[str, Batcher] = field(default_factory=dict)
    batch_sizes: dict[str, int] = field(default_factory=dict)  # per operation, chosen by warm_up
    signatures: dict[str, tuple] = field(default_factory=dict)  # per operation, the protocol's (service.oip_models)
    # Fixed for the version's life and read on every request: plain attributes, copied once.
    name: str = field(init=False)
    version: int = field(init=False)
    kind: str = field(init=False)
    latent_dim: int = field(init=False)
    has_scale: bool = field(init=False)  # whether encode gives a posterior scale (the AE's is None)
    conditional: bool = field(init=False)  # whether its networks take the digit (encode, decode, reconstruct)
    digits: bool = field(init=False)  # whether `sample` can draw a given digit
    score_terms: tuple[str, ...] = field(init=False)  # what the model's score_terms gives (log_likelihood first)
    reference: Reference | None = None  # the artifact's reference set (lvm.reference); None when it has none
    outlier_rule: OutlierRule | None = None  # the reference's rule

    def __post_init__(self) -> None:
        self.name, self.version, self.kind = self.artifact.name, self.artifact.version, self.artifact.kind
        self.latent_dim, self.has_scale = self.model.latent_dim, self.model.has_scale
        self.conditional, self.digits = self.model.conditional, self.model.digit_density() is not None
        self.score_terms = tuple(self.model.score_term_names)

    @classmethod
    def load(cls, artifact: Artifact, placement: Placement) -> ServedModel:
        """Builds the network, moves it to the device and reads the outlier rule of its reference set, when the
        artifact has one (blocking: call it off the event loop). A listed but corrupt reference refuses the version."""
        model = placement.move(artifact.build())
        reference = read_reference(artifact.path, artifact.manifest) if has_reference(artifact.manifest) else None
        return cls(artifact, model, placement, reference=reference,
                   outlier_rule=None if reference is None else reference.rule())

    async def warm_up(self, runtime: Runtime, repeats: int = 3) -> None:
        """Runs every operation at every warm-up size, checks the outputs are finite, and picks each operation's
        batch size from the fastest of `repeats` timed passes per size. Each pass is a job of its own on the compute
        thread, so the batches of versions already serving go between them rather than waiting for all of them.

        On the CPU a pass is timed in the compute thread's own CPU time: a reload under load shares the core with the
        event loop, and wall time would then pick smaller batches (half the size for the VAE's reconstruct while
        single-image /encode kept the core busy: BENCHMARKS.md, "Figures behind"). On CUDA the pass waits on the
        device, so wall time. With max_pass_s 0 (the rule off: every queue batches up to max_batch_size) nothing is
        timed, and each size runs once.
        """
        clock = time.thread_time if self.placement.device.type == "cpu" else time.perf_counter
        compute, max_batch_size, max_pass_s = runtime.compute, runtime.config.max_batch_size, runtime.config.max_pass_s
        for name, op in OPERATIONS.items():
            run = batch_fn(op, self)
            pass_s = {}
            for size in warmup_sizes(max_batch_size):
                rows = op.warmup(self, size, bool(max_pass_s))
                outputs, _ = await compute.run(run, [rows])  # the first pass pays for allocations: not timed
                given = op.given(self)
                if len(outputs) != len(given):
                    raise ValueError(f"warm-up of {name} gave {len(outputs)} outputs, not {len(given)}")
                for out in outputs:
                    if out.shape[0] != size or not np.isfinite(out).all():
                        raise ValueError(f"warm-up of {name} at batch {size} gave shape {out.shape} or non-finite "
                                         "values")
                if not max_pass_s:
                    continue
                pass_s[size] = min([(await compute.run(_time_pass, run, [rows], clock))[0] for _ in range(repeats)])
                if choose_batch_size(pass_s, max_pass_s) != size:
                    break  # larger sizes take longer still (and save less per row): the rule will never pick them
            self.batch_sizes[name] = choose_batch_size(pass_s, max_pass_s) if max_pass_s else max_batch_size

    def start(self, runtime: Runtime, observer: Callable[[str], BatchObserver] | None = None) -> None:
        """Creates and starts one batcher per operation (on the event loop)."""
        config = runtime.config
        for op, operation in OPERATIONS.items():
            batcher = Batcher(
                batch_fn(operation, self),
                runtime.compute,
                runtime.activity,
                replace(config, max_batch_size=self.batch_sizes.get(op, config.max_batch_size)),
                observer(op) if observer else None,
                name=f"{self.name}/{self.version}/{op}",
            )
            batcher.start()
            self.batchers[op] = batcher

    async def close(self) -> None:
        """Stops the batchers once their queued work has run."""
        for batcher in self.batchers.values():
            await batcher.close()


def _time_pass(run: Callable, parts: list[np.ndarray], clock: Callable[[], float]) -> float:
    """Seconds of one pass by `clock`, on the compute thread."""
    start = clock()
    run(parts)
    return clock() - start
