"""`RequestRoute`: FastAPI's route class, minus the per-request work that endpoints taking only a Request never use.

FastAPI's own handler resolves dependencies, checks content types and serialises return values on every request,
a sizeable share of a single-image /encode (measured by `python -m bench.routing`; figures in BENCHMARKS.md). An
endpoint declared as `async def f(request: Request) -> Response`, with no parameters or dependencies, needs none of
it, so this class hands it the Request directly. Every other endpoint (parameters, dependencies, a returned model)
keeps FastAPI's handler. The OpenAPI schema is built from the route's metadata, not its handler, so the docs are the
same either way; errors still go through the app's exception handlers.

A router included with dependencies of its own is visible only through FastAPI's private
`_effective_route_context_var`; on a FastAPI without it every route keeps FastAPI's handler (slower, never wrong).
tests/unit/test_routing.py fails loudly when an upgrade removes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, get_type_hints

import fastapi.routing
from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
CONTEXT_VAR = "_effective_route_context_var"  # private to fastapi.routing (0.115 to at least 0.165)


class RequestRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        dependant = _effective_dependant(self)
        if dependant is not None and takes_only_request(self.endpoint, dependant):
            return self.endpoint
        return super().get_route_handler()


def takes_only_request(endpoint: Callable, dependant: Dependant) -> bool:
    """True for `async def f(request: Request) -> Response` (or a Response subclass) with no dependencies."""
    if not inspect.iscoroutinefunction(endpoint) or dependant.request_param_name is None:
        return False
    if len(inspect.signature(endpoint).parameters) != 1:
        return False
    if any((dependant.path_params, dependant.query_params, dependant.header_params, dependant.cookie_params,
            dependant.body_params, dependant.dependencies)):
        return False
    try:
        returns = get_type_hints(endpoint).get("return")
    except (NameError, TypeError):  # annotations that do not resolve: let FastAPI's handler deal with the endpoint
        return False
    return inspect.isclass(returns) and issubclass(returns, Response)


def _effective_dependant(route: APIRoute) -> Dependant | None:
    """The dependant FastAPI would use. FastAPI builds each included copy of a route in a context that adds the
    including router's dependencies (`include_router(..., dependencies=...)`), so that such a dependency is never
    skipped. None where FastAPI has no such context variable: nothing then tells whether one was added."""
    context_var = getattr(fastapi.routing, CONTEXT_VAR, None)
    if context_var is None:
        return None
    context = context_var.get()
    if context is not None and getattr(context, "original_route", None) is route:
        return getattr(context, "dependant", None) or route.dependant
    return route.dependant
