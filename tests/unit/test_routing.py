"""RequestRoute: endpoints taking only the Request get it directly; everything else keeps FastAPI's handler, and the
OpenAPI schema and error handling are the same either way."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from service import routes
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


def test_the_services_openapi_schema_is_the_same_as_with_fastapis_route_class():
    def schema(route_class: type[APIRoute]) -> dict:
        router = APIRouter(route_class=route_class)
        for route in routes.router.routes:
            kwargs = {key: getattr(route, key) for key in (
                "response_model", "responses", "summary", "openapi_extra", "methods", "name", "response_class")}
            router.add_api_route(route.path, route.endpoint, **kwargs)
        app = FastAPI(title="t", version="0")
        app.include_router(router)
        return app.openapi()

    assert schema(RequestRoute) == schema(APIRoute)
    assert isinstance(routes.router.routes[0], RequestRoute)
