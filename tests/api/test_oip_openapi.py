"""Schemathesis over the Open Inference Protocol routes, in-process: requests generated from the OpenAPI document
(valid and not) go through Starlette's TestClient to an app serving the tiny artifacts; every answer must be
documented (status, content type, body schema, headers) and none may be a 5xx; malformed requests must be 4xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings

SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).include(path_regex=r"^/v2")


@pytest.fixture(scope="module")
def served(artifacts_template):
    app = create_app(Settings(artifacts_dir=artifacts_template, max_batch_size=64, max_items_per_request=64,
                              max_pass_ms=0))
    with TestClient(app) as client:
        client.portal.call(_loaded, app)
        yield client


async def _loaded(app) -> None:
    await app.state.service.initial_load


@SCHEMA.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_v2_routes_conform_to_their_openapi(case, served):
    if "model_name" in (case.path_parameters or {}) and case.operation.method.upper() == "POST":
        case.path_parameters["model_name"] = "vae-encode"  # reach the parser, not only the 404 of an unknown name
    response = served.request(**case.as_transport_kwargs(base_url="http://testserver"))
    assert response.status_code < 500, response.text
    # A schema cannot say that data must fill the declared shape or that pixels lie in [0, 1], so a schema-valid
    # tensor may well be refused (422): that check alone is left out.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
