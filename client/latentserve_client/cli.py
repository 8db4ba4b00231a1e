"""The `latentserve` command (also `python -m latentserve_client`): one subcommand per operation, JSON on stdout,
errors as one line on stderr with exit status 1 (2 for a bad command line, as argparse does).

    latentserve encode digit.png more.png
    latentserve decode 0.5 -1.2 -o decoded.png
    latentserve reconstruct digit.png -o out.png
    latentserve sample -n 16 --seed 1 -o grid.png
    latentserve sample -n 16 --digit 7 -o sevens.png
    latentserve score digit.png
    latentserve models
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from latentserve_client import inputs
from latentserve_client._version import __version__
from latentserve_client.client import DEFAULT_URL, Client
from latentserve_client.errors import LatentServeError

ENV = {"url": "LATENTSERVE_URL", "model": "LATENTSERVE_MODEL", "version": "LATENTSERVE_VERSION",
       "api_key": "LATENTSERVE_API_KEY"}


class CommandError(Exception):
    """A problem with the command's own inputs or outputs (a missing file, no Pillow for a PNG)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latentserve", description="Client of a latentserve server.")
    p.add_argument("--url", default=os.environ.get(ENV["url"], DEFAULT_URL),
                   help=f"server URL (${ENV['url']}; default {DEFAULT_URL})")
    p.add_argument("--model", default=os.environ.get(ENV["model"]), help=f"model name (${ENV['model']})")
    p.add_argument("--version", type=int, default=_env_int(ENV["version"]),
                   help=f"model version to pin (${ENV['version']}; default the server's newest)")
    p.add_argument("--api-key", default=os.environ.get(ENV["api_key"]), help=f"bearer key (${ENV['api_key']})")
    p.add_argument("--timeout", type=_seconds, default=30.0, help="seconds per attempt (default 30)")
    p.add_argument("--json-body", action="store_true", help="send JSON bodies instead of .npy")
    p.add_argument("--client-version", action="version", version=f"latentserve-client {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    enc = sub.add_parser("encode", help="posterior mean and scale of PNG or .npy images")
    enc.add_argument("images", nargs="+", type=Path, help="28x28 PNG files, or .npy arrays of images")
    dec = sub.add_parser("decode", help="pixel means of one latent code")
    dec.add_argument("latent", nargs="+", type=float, help="the code's K numbers")
    dec.add_argument("-o", "--output", type=Path, help="write a PNG (or .npy) instead of printing pixels")
    rec = sub.add_parser("reconstruct", help="images through the posterior and back")
    rec.add_argument("images", nargs="+", type=Path)
    rec.add_argument("--sample", action="store_true", help="draw z from the posterior instead of its mean")
    rec.add_argument("--seed", type=int)
    rec.add_argument("-o", "--output", type=Path, help="write a PNG grid (or .npy) instead of printing pixels")
    sam = sub.add_parser("sample", help="draws from the prior, decoded")
    sam.add_argument("-n", type=int, default=16, help="how many (default 16)")
    sam.add_argument("--seed", type=int, help="the same seed gives the same digits")
    sam.add_argument("--digit", type=int, help="draw this digit, 0-9 (the server's cvae when no model is named)")
    sam.add_argument("-o", "--output", type=Path, help="write a PNG grid (or .npy) instead of printing pixels")
    sco = sub.add_parser("score", help="log-likelihood, percentile and outlier verdict of PNG or .npy images")
    sco.add_argument("images", nargs="+", type=Path, help="28x28 PNG files, or .npy arrays of images")
    sco.add_argument("--samples", type=int, help="importance samples per image (VAE; server default 100)")
    sco.add_argument("--seed", type=int, help="the same seed gives the same estimate")
    sub.add_parser("models", help="the loaded models and versions")
    one = sub.add_parser("model", help="the manifests of one model's versions")
    one.add_argument("name")
    sub.add_parser("ready", help="exit 0 when the server is ready, 1 when not")
    return p


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse's type: anything else is a usage error, exit status 2)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"latentserve: error: ${name} must be an integer, not {value!r}") from None


def _read_images(paths: list[Path]) -> list:
    """Each path as a PNG (bytes, decoded by Pillow here or by the server) or a .npy array of images."""
    out = []
    for path in paths:
        try:
            if path.suffix == ".npy":
                arr = np.load(path, allow_pickle=False)
                out.extend(inputs.image_batch(arr).array)
            else:
                out.append(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
    return out


def _short(array: np.ndarray | None) -> list | None:
    """Nested lists of the float32 values, each with the fewest digits that read back as the same float32 (JSON of
    `.tolist()` would print each as the float64 it widens to: 17 digits)."""
    if array is None:
        return None
    return [_short(row) for row in array] if array.ndim > 1 else [float(str(v)) for v in array.astype(np.float32)]


def _write(images: np.ndarray, output: Path | None, extra: dict | None = None) -> dict:
    """The images to `output` (one PNG grid, or .npy) or into the JSON reply, after the model and version."""
    served = {"model": images.model, "version": images.version, **(extra or {})}
    if output is None:
        return {**served, "images": _short(images.reshape(len(images), -1))}
    try:
        if output.suffix == ".npy":
            with open(output, "wb") as f:  # np.save(path) would add .npy to a name that has none
                np.save(f, images)
        else:
            try:
                from PIL import Image
            except ImportError:
                raise CommandError("writing PNGs needs Pillow: pip install 'latentserve-client[png]', or use -o "
                                   "x.npy") from None
            Image.fromarray(inputs.grid(images)).save(output, format="PNG")
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from None
    return {**served, "output": str(output), "shape": list(images.shape)}


def run(args: argparse.Namespace, client: Client) -> dict | list:
    if args.command == "encode":
        posterior = client.encode(_read_images(args.images))
        return {"model": posterior.model, "version": posterior.version, "mean": _short(posterior.mean),
                "scale": _short(posterior.scale)}
    if args.command == "decode":
        return _write(client.decode(np.asarray(args.latent, np.float32)), args.output)
    if args.command == "reconstruct":
        return _write(client.reconstruct(_read_images(args.images), args.sample, args.seed), args.output)
    if args.command == "sample":
        return _write(client.sample(args.n, args.seed, args.digit), args.output,
                      {"n": args.n, "seed": args.seed, "digit": args.digit})
    if args.command == "score":
        scores = client.score(_read_images(args.images), args.samples, args.seed)
        return {"model": scores.model, "version": scores.version, "samples": scores.samples,
                **{name: None if value is None else value.tolist() for name, value in (
                    ("log_likelihood", scores.log_likelihood), ("percentile", scores.percentile),
                    ("outlier", scores.outlier), ("elbo", scores.elbo), ("reconstruction", scores.reconstruction),
                    ("kl", scores.kl))}}
    if args.command == "models":
        return client.models()
    if args.command == "model":
        return client.model(args.name)
    ready = client.ready()
    if not ready:
        raise CommandError(f"{client.url} is not ready")
    return {"status": "ready"}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key, model=args.model, version=args.version, timeout=args.timeout,
                    format="json" if args.json_body else "npy") as client:
            result = run(args, client)
    except (LatentServeError, CommandError) as exc:
        print("latentserve: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of ours, still one line as documented; the type names what to report
        print(f"latentserve: error: unexpected {type(exc).__name__}: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    try:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`latentserve sample | head`): no traceback, and none again when Python flushes stdout
        # at exit (the recipe of Python's signal module docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
