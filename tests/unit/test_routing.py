"""RequestRoute: endpoints taking only the Request get it directly; everything else keeps FastAPI's handler;
error handling is the same either way; the service's request-only routes still document what they take."""

from __future__ import annotations

from contextvars import ContextVar

import fastapi
import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from service import routing
from service.routing import RequestRoute

pytestmark = pytest.mark.anyio


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="text/plain")


async def refuse(request: Request) -> Response:
    raise HTTPException(418, "refused")


async def with_query(request: Request, n: int) -> Response:
    return Response(str(n * 2))


async def returns_dict(request: Request) -> dict:
    return {"path": request.url.path}


async def no_request() -> Response:
    return Response("ok")


def deny() -> None:
    raise HTTPException(403, "denied by dependency")


def _handler(endpoint, **route_kwargs):
    router = APIRouter(route_class=RequestRoute)
    router.add_api_route("/x", endpoint, methods=["POST"], **route_kwargs)
    return router.routes[0].get_route_handler()


def test_request_only_endpoints_get_the_request_directly():
    assert _handler(echo) is echo
    assert _handler(refuse) is refuse


@pytest.mark.parametrize("endpoint", [with_query, returns_dict, no_request])
def test_other_endpoints_keep_fastapis_handler(endpoint):
    assert _handler(endpoint) is not endpoint


def test_route_level_dependencies_keep_fastapis_handler():
    assert _handler(echo, dependencies=[Depends(deny)]) is not echo


def _app(dependencies=()) -> FastAPI:
    router = APIRouter(route_class=RequestRoute)
    for path, endpoint in (("/echo", echo), ("/refuse", refuse), ("/query", with_query), ("/dict", returns_dict)):
        router.add_api_route(path, endpoint, methods=["POST"])
    app = FastAPI()

    @app.exception_handler(HTTPException)
    async def as_json(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "handled": True}, status_code=exc.status_code)

    app.include_router(router, dependencies=list(dependencies))
    return app


async def _post(app: FastAPI, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.post(path, **kwargs)


async def test_both_kinds_of_endpoint_answer_and_errors_reach_the_apps_handlers():
    app = _app()
    echoed = await _post(app, "/echo", content=b"body bytes")
    assert echoed.status_code == 200 and echoed.content == b"body bytes"
    refused = await _post(app, "/refuse")
    assert refused.status_code == 418 and refused.json() == {"detail": "refused", "handled": True}
    assert (await _post(app, "/query", params={"n": 21})).text == "42"
    assert (await _post(app, "/query", params={"n": "x"})).status_code == 422  # FastAPI's validation still runs
    assert (await _post(app, "/dict")).json() == {"path": "/dict"}


async def test_dependencies_of_an_including_router_are_never_skipped():
    refused = await _post(_app([Depends(deny)]), "/echo", content=b"body")
    assert refused.status_code == 403 and refused.json()["detail"] == "denied by dependency"


async def test_fastapi_still_has_the_private_context_variable_the_fast_path_needs():
    """The guard: if this fails after a FastAPI upgrade, RequestRoute has silently fallen back to FastAPI's handler
    on every route (correct, but slower: BENCHMARKS.md, `python -m bench.routing`). Find where this FastAPI keeps an
    including router's dependencies and update service/routing.py, or remove RequestRoute."""
    context_var = getattr(fastapi.routing, routing.CONTEXT_VAR, None)
    assert isinstance(context_var, ContextVar), (
        f"FastAPI {fastapi.__version__} has no fastapi.routing.{routing.CONTEXT_VAR}: see service/routing.py")
    seen = []
    original = RequestRoute.get_route_handler

    def spy(route):
        context = context_var.get()
        seen.append(context is not None and getattr(context, "original_route", None) is route)
        return original(route)

    RequestRoute.get_route_handler = spy
    try:
        app = _app()
        assert (await _post(app, "/echo", content=b"x")).content == b"x"  # the included copy may be built lazily
    finally:
        RequestRoute.get_route_handler = original
    assert any(seen), f"FastAPI {fastapi.__version__} no longer sets {routing.CONTEXT_VAR} for an included route"


async def test_without_the_private_variable_every_route_keeps_fastapis_handler(monkeypatch):
    monkeypatch.setattr(routing, "CONTEXT_VAR", "_a_name_an_upgrade_gave_it")  # as if FastAPI renamed it
    assert _handler(echo) is not echo
    refused = await _post(_app([Depends(deny)]), "/echo", content=b"body")
    assert refused.status_code == 403  # the including router's dependency still runs
    echoed = await _post(_app(), "/echo", content=b"body bytes")
    assert echoed.status_code == 200 and echoed.content == b"body bytes"


_INFERENCE = {"/encode": True, "/decode": True, "/reconstruct": True, "/sample": False}  # path -> takes .npy


def test_the_services_inference_routes_take_the_fast_path_and_still_document_their_bodies(tmp_path):
    """FastAPI cannot see what a handler reading the bare Request accepts, so each inference route declares its body,
    query parameters and errors itself: the document must show them, and the fast path must really be taken."""
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(artifacts_dir=tmp_path))
    by_path = {route.path: route for route in app.routes if isinstance(route, APIRoute)}
    paths = app.openapi()["paths"]
    for path, takes_npy in _INFERENCE.items():
        route = by_path[path]
        assert isinstance(route, RequestRoute) and route.get_route_handler() is route.endpoint, path
        operation = paths[path]["post"]
        content = operation["requestBody"]["content"]
        assert "properties" in content["application/json"]["schema"], path
        assert ("application/x-npy" in content) is takes_npy, path
        assert {p["name"] for p in operation["parameters"]} >= {"model", "version"}, path
        assert {"401", "404", "413", "415", "422", "503", "504"} <= set(operation["responses"]), path
