"""`RequestRoute`: FastAPI's route class, minus the per-request work that endpoints taking only a Request never use.

FastAPI's own handler resolves dependencies, checks content types and serialises return values on every request:
about 27 us per call measured in-process on this project's CPU machine, a sixth of what a single-image /encode cost
at concurrency 64 before this class. An endpoint declared as `async def f(request: Request) -> Response`, with no parameters or
dependencies, needs none of it, so this class hands it the Request directly. Every other endpoint (parameters,
dependencies, a returned model) keeps FastAPI's handler. The OpenAPI schema is built from the route's metadata, not
its handler, so the docs are the same either way; errors still go through the app's exception handlers.
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


class RequestRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        if takes_only_request(self.endpoint, _effective_dependant(self)):
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


def _effective_dependant(route: APIRoute) -> Dependant:
    """The dependant FastAPI would use. Recent FastAPI builds each included copy of a route in a context that adds
    the including router's dependencies (`include_router(..., dependencies=...)`); read it where it exists, so that
    such a dependency is never skipped."""
    context_var = getattr(fastapi.routing, "_effective_route_context_var", None)
    context = context_var.get() if context_var is not None else None
    if context is not None and getattr(context, "original_route", None) is route:
        return getattr(context, "dependant", None) or route.dependant
    return route.dependant
