"""`python -m training fit ...` trains one model and prints the new artifact's path (the last line of stdout);
`python -m training evaluate PATH` recomputes its test figures and prints them as JSON; `python -m training derive
PATH [--add embedding classes reference report]` writes a new version with the same weights and those files (re)computed, the
others carried over (training/derive.py). Progress goes to
stderr.
Bad input or data ends in one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from lvm.artifact import ArtifactError
from lvm.networks import ACTIVATIONS
from training.data import DataError
from training.derive import STEPS
from training.kinds import TRAINING_KINDS

EXIT_USAGE = 2
# What the train set (requirements/train.txt, pyproject's `train` extra) adds to the service's runtime set.
TRAIN_MODULES = frozenset(("pyro", "tqdm", "matplotlib"))
INSTALL_TRAIN = "make install-train"
# Flags that map onto config fields; a flag left out keeps the config's default (the recipe of the defaults).
_CONFIG_FLAGS = {
    "latent_dim": int, "hidden": int, "activation": str, "epochs": int, "batch_size": int, "lr": float,
    "final_lr_ratio": float, "seed": int, "valid_size": int, "num_threads": int, "device": str,
    "kl_warmup_epochs": int, "iwae_samples": int, "iwae_images": int,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="train one model and write it as the next version of NAME")
    fit.add_argument("--kind", required=True, choices=sorted(TRAINING_KINDS))
    fit.add_argument("--name", help="artifact name (default: pca, ae, vae or cvae after the kind)")
    fit.add_argument("--data-dir", type=Path, help="folder with the four MNIST IDX files (default: $MNIST_DIR)")
    fit.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"), help="default: artifacts")
    for flag, kind in _CONFIG_FLAGS.items():
        option = "--" + flag.replace("_", "-")
        if flag == "hidden":
            fit.add_argument(option, type=int, nargs="+", help="hidden layer widths, e.g. --hidden 512 256; "
                             + _default_help(flag))
        elif flag == "activation":
            fit.add_argument(option, choices=ACTIVATIONS, help=_default_help(flag))
        else:
            fit.add_argument(option, type=kind, help=_default_help(flag))
    evaluate = commands.add_parser("evaluate", help="recompute the test figures of an artifact version")
    evaluate.add_argument("path", type=Path)
    evaluate.add_argument("--data-dir", type=Path, help="folder with the four MNIST IDX files (default: $MNIST_DIR)")
    evaluate.add_argument("--test-images", type=int, help="use only the first N test images")
    derive = commands.add_parser("derive", help="a new version with the same weights and files added or redrawn")
    derive.add_argument("path", type=Path)
    derive.add_argument("--add", nargs="+", choices=list(STEPS), default=list(STEPS),
                        help="what to (re)compute; the source's other files are carried over (default: all)")
    derive.add_argument("--data-dir", type=Path, help="folder with the four MNIST IDX files (default: $MNIST_DIR)")
    derive.add_argument("--artifacts-dir", type=Path, help="where to write (default: the source's own root)")
    return parser


def _default_help(flag: str) -> str:
    """`default: 60 (ae, vae)`, or each kind's own where they differ, read off the config classes."""
    by_value: dict[str, list[str]] = {}
    for kind, spec in TRAINING_KINDS.items():
        config_class = spec.config
        field = next((f for f in fields(config_class) if f.name == flag), None)
        if field is not None:
            value = field.default if field.default is not MISSING else field.default_factory()
            text = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
            by_value.setdefault(text, []).append(kind)
    if len(by_value) == 1:
        (value, kinds), = by_value.items()
        return f"default: {value} ({', '.join(kinds)})".replace("%", "%%")
    return ("default: " + "; ".join(f"{', '.join(kinds)}: {value}" for value, kinds in by_value.items())).replace("%", "%%")


def make_config(args: argparse.Namespace):
    """The kind's config from its defaults and the flags given; a flag that the kind does not take is an error."""
    config_class = TRAINING_KINDS[args.kind].config
    known = {f.name for f in fields(config_class)}
    given = {k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k) is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise ValueError(f"kind {args.kind!r} does not take {flags}")
    return config_class(**given)


def _missing_train_module() -> str | None:
    """The first module of the train set that is not installed (found without importing it), or None."""
    for name in sorted(TRAIN_MODULES):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ValueError:  # in sys.modules as None: unimportable
            return name
    return None


def _train_set_error(module: str) -> int:
    print(f"error: training needs the train set, and {module} is missing: run `{INSTALL_TRAIN}` (it installs "
          "requirements/train.txt into .venv)", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = _missing_train_module()
    if missing:  # before any data is read: `make serve` installs the runtime set only
        return _train_set_error(missing)
    try:
        from training import pipeline

        if args.command == "fit":
            config = make_config(args)
            path = pipeline.fit_and_export(args.kind, config, args.data_dir, args.artifacts_dir,
                                           args.name or TRAINING_KINDS[args.kind].default_name)
            print(path)
        elif args.command == "derive":
            from training.derive import derive

            print(derive(args.path, args.data_dir, args.artifacts_dir, steps=tuple(args.add)))
        else:
            if args.test_images is not None and args.test_images < 1:
                raise ValueError(f"--test-images must be at least 1, got {args.test_images}")
            print(json.dumps(pipeline.evaluate_artifact(args.path, args.data_dir, args.test_images), indent=2))
    except (DataError, ArtifactError, ValueError, FloatingPointError, OSError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_MODULES:
            raise
        return _train_set_error(exc.name)
    except KeyboardInterrupt:
        print("error: interrupted; no artifact was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
