"""What a manifest's `architecture` block may say, and the weights it implies: the bounds on sizes (the one place they
are written), the tensor shapes of an architecture, and `build_model`, which builds only what passed both checks.

A manifest is checked against its weights' safetensors header before any tensor is read or any module is built, so a
hostile or mistaken manifest (latent_dim 30000, widths of millions) is refused in milliseconds, not after gigabytes.
"""

from __future__ import annotations

from torch import Tensor

from lvm.networks import LatentModel, model_class

# Bounds on what an artifact may describe; training refuses configs outside them too. The largest network they allow
# holds MAX_PARAMETERS floats (200 MB), which a 3 GiB pod loads comfortably.
MAX_LATENT_DIM = 512
MAX_WIDTH = 4096
MAX_HIDDEN_LAYERS = 8
MAX_PARAMETERS = 50_000_000


def check_sizes(latent_dim: object, hidden: object = ()) -> None:
    """Raises ValueError unless latent_dim and every hidden width are integers within the bounds above."""
    if not _is_int(latent_dim) or not 1 <= latent_dim <= MAX_LATENT_DIM:
        raise ValueError(f"latent_dim must be an integer in [1, {MAX_LATENT_DIM}], got {latent_dim!r}")
    if not isinstance(hidden, (list, tuple)) or not all(_is_int(h) for h in hidden):
        raise ValueError(f"hidden must be a list of integers, got {hidden!r}")
    if len(hidden) > MAX_HIDDEN_LAYERS:
        raise ValueError(f"at most {MAX_HIDDEN_LAYERS} hidden layers are allowed, got {len(hidden)}")
    if any(not 1 <= h <= MAX_WIDTH for h in hidden):
        raise ValueError(f"hidden widths must lie in [1, {MAX_WIDTH}], got {list(hidden)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def weight_shapes(kind: str, architecture: dict) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor the architecture needs (ValueError when it is malformed or too large), as
    the kind's class states them. Nothing is allocated (MLPs are built on torch's meta device)."""
    cls = model_class(kind)
    if not isinstance(architecture, dict):
        raise ValueError("architecture must be an object")
    shapes = cls.weight_shapes(kind, architecture)
    parameters = sum(_numel(shape) for shape in shapes.values())
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"the architecture has {parameters:,} parameters, more than the limit of {MAX_PARAMETERS:,}")
    return shapes


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


def check_shapes(kind: str, architecture: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raises ValueError unless `shapes` (tensor name -> shape, as a safetensors header lists them) are exactly the
    tensors the architecture needs (a PPCA may omit its prior)."""
    expected = weight_shapes(kind, architecture)
    required = model_class(kind).required_weights(kind, architecture)
    problems = [f"{name} missing" for name in required if name not in shapes]
    problems += [f"{name} is not part of the architecture" for name in sorted(shapes.keys() - expected.keys())]
    problems += [f"{name} has shape {list(shapes[name])}, the architecture needs {list(expected[name])}"
                 for name in sorted(shapes.keys() & expected.keys()) if tuple(shapes[name]) != expected[name]]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ValueError(f"weights do not match the architecture: {shown}")


def build_model(kind: str, architecture: dict, tensors: dict[str, Tensor]) -> LatentModel:
    """Rebuilds a model from its manifest entries and weights, in eval mode with gradients off; raises ValueError
    when they do not fit together or when the architecture says anything the built model would not say of itself."""
    check_shapes(kind, architecture, {name: tuple(t.shape) for name, t in tensors.items()})
    model = model_class(kind).from_weights(kind, architecture, tensors)
    built = model.architecture()
    if built != architecture:
        fields = sorted(k for k in built.keys() | architecture.keys() if built.get(k) != architecture.get(k))
        raise ValueError("architecture fields " + ", ".join(
            f"{k} ({architecture.get(k)!r}; a {kind} model has {built.get(k)!r})" for k in fields) + " do not match")
    return model.eval().requires_grad_(False)
