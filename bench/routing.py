"""What `service.routing.RequestRoute` saves, in-process, two ways: the handler alone (a no-op request-only endpoint
called in a loop, RequestRoute against FastAPI's APIRoute), and single-image JSON /encode through the service's ASGI
app called by concurrent callers, with its routes as they are and with every route given FastAPI's own handler.

`python -m bench.routing --artifacts-dir artifacts` prints one JSON object: for each variant, in alternating rounds (so
that drift on a shared machine hits both), the process's CPU time per request (both threads: the event loop's and the
compute thread's; other processes on the core inflate wall time but hardly this) and the wall time per request, their
medians, and the median of the paired CPU-time savings. Pin it to one core (`taskset -c 0`) for figures comparable
with BENCHMARKS.md's in-process table.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import time
from contextlib import AsyncExitStack
from pathlib import Path

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute, request_response

from service.app import create_app
from service.routing import RequestRoute
from service.settings import Settings

BODY = orjson.dumps({"images": [[0.5] * 784]})
_SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
          "path": "/encode", "raw_path": b"/encode", "root_path": "", "query_string": b"",
          "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
          "client": ("127.0.0.1", 1), "server": ("bench", 80)}


def use_fastapis_handler(app) -> int:
    """Gives every RequestRoute of the app FastAPI's own handler (what the service did before RequestRoute). The
    route objects are shared by every app built in the process (they belong to the routers of service.routes and
    friends), so this app gets copies."""
    swapped = 0
    for i, route in enumerate(app.router.routes):
        if isinstance(route, RequestRoute):
            route = app.router.routes[i] = copy.copy(route)
            route.app = request_response(APIRoute.get_route_handler(route))
            swapped += 1
    return swapped


async def _noop(request: Request) -> Response:
    await request.body()
    return Response(b"{}", media_type="application/json")


def _noop_app(route_class: type[APIRoute]) -> FastAPI:
    router = APIRouter(route_class=route_class)
    router.add_api_route("/encode", _noop, methods=["POST"])
    return FastAPI(routes=router.routes)


async def handler_overhead(rounds: int, calls: int) -> dict:
    """CPU microseconds per call of a no-op request-only endpoint, through each route class."""
    apps = {"RequestRoute": _noop_app(RequestRoute), "FastAPI handler": _noop_app(APIRoute)}
    cpu: dict[str, list[float]] = {name: [] for name in apps}
    for app in apps.values():
        await _round(app, 1, calls // 4)
    for _ in range(rounds):
        for name, app in apps.items():
            cpu[name].append(round((await _round(app, 1, calls))[0], 1))
    savings = [b - a for a, b in zip(cpu["RequestRoute"], cpu["FastAPI handler"])]
    return {"calls_per_round": calls, "cpu_us_per_call": cpu,
            "median_cpu_us": {name: statistics.median(v) for name, v in cpu.items()},
            "median_paired_cpu_saving_us": round(statistics.median(savings), 1)}


async def _one(app) -> None:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a disconnect never comes
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    status = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app({**_SCOPE, "state": {}}, receive, send)
    if status != [200]:
        raise RuntimeError(f"/encode answered {status}")


async def _round(app, concurrency: int, requests: int) -> tuple[float, float]:
    """(CPU, wall) microseconds per request for `requests` requests from `concurrency` callers."""
    each = requests // concurrency

    async def caller() -> None:
        for _ in range(each):
            await _one(app)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    n = each * concurrency
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


async def measure(artifacts_dir: Path, rounds: int, concurrency: int, requests: int) -> dict:
    return {"handler": await handler_overhead(rounds, 5000),
            "encode": await encode(artifacts_dir, rounds, concurrency, requests)}


async def encode(artifacts_dir: Path, rounds: int, concurrency: int, requests: int) -> dict:
    settings = Settings(artifacts_dir=artifacts_dir, torch_threads=1)
    apps = {"RequestRoute": create_app(settings), "FastAPI handler": create_app(settings)}
    swapped = use_fastapis_handler(apps["FastAPI handler"])
    cpu: dict[str, list[float]] = {name: [] for name in apps}
    wall: dict[str, list[float]] = {name: [] for name in apps}
    async with AsyncExitStack() as started:
        for app in apps.values():
            await started.enter_async_context(app.router.lifespan_context(app))
            await app.state.service.initial_load
        for app in apps.values():
            await _round(app, concurrency, requests // 4)  # warm-up
        for r in range(rounds):
            for name, app in (list(apps.items()) if r % 2 == 0 else list(apps.items())[::-1]):  # alternate the order
                cpu_us, wall_us = await _round(app, concurrency, requests)
                cpu[name].append(round(cpu_us, 1))
                wall[name].append(round(wall_us, 1))
        batches = {name: _mean_batch(app) for name, app in apps.items()}
    savings = [b - a for a, b in zip(cpu["RequestRoute"], cpu["FastAPI handler"])]
    return {"routes_swapped": swapped, "concurrency": concurrency, "requests_per_round": requests,
            "mean_encode_batch": batches, "cpu_us_per_request": cpu, "wall_us_per_request": wall,
            "median_cpu_us": {name: statistics.median(v) for name, v in cpu.items()},
            "median_wall_us": {name: statistics.median(v) for name, v in wall.items()},
            "median_paired_cpu_saving_us": round(statistics.median(savings), 1)}


def _mean_batch(app) -> float:
    """Mean rows per forward pass of vae/1's encode queue so far (a slower handler forms larger batches at a fixed
    concurrency, which lowers the compute per request: read the CPU figures with it)."""
    text = app.state.service.metrics.render().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("latentserve_batch_size_sum") and 'operation="encode"' in line:
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("latentserve_batch_size_count") and 'operation="encode"' in line:
            count += float(line.rsplit(" ", 1)[1])
    return round(total / count, 1) if count else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--requests", type=int, default=6400)
    args = p.parse_args()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(measure(args.artifacts_dir, args.rounds, args.concurrency, args.requests)), indent=1))


if __name__ == "__main__":
    main()
