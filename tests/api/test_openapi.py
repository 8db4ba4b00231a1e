"""Schemathesis over every route of the OpenAPI document (the service's own, the page's data routes, the Open
Inference Protocol's), in-process: requests generated from the document (valid and not) go through Starlette's
TestClient to an app serving the tiny artifacts; every answer must be documented (status, content type, body schema,
headers) and none may be a 5xx; malformed requests must be 4xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings

MAX_EXAMPLES = 20  # per operation: about 25 operations, so the whole file takes seconds, not minutes
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def served(artifacts_template):
    # Starlette's test client is no loopback peer: admin is opened, as on a trusted network (tests/api/test_access.py
    # covers the loopback rule), so that its routes answer by their documented schema.
    app = create_app(Settings(artifacts_dir=artifacts_template, max_batch_size=64, max_items_per_request=64,
                              max_pass_ms=0, admin_open=True))
    with TestClient(app) as client:
        client.portal.call(_loaded, app)
        yield client


async def _loaded(app) -> None:
    await app.state.service.initial_load


@SCHEMA.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_route_conforms_to_its_openapi(case, served):
    params = case.path_parameters or {}
    if "model_name" in params and case.operation.method.upper() == "POST":
        params["model_name"] = "vae-encode"  # reach the parser, not only the 404 of an unknown name
    if "name" in params and "version" in params:
        params["name"] = "vae"  # reach the version and file checks, not only the 404 of an unknown model
    response = served.request(**case.as_transport_kwargs(base_url="http://testserver"))
    assert response.status_code < 500, response.text
    # A schema cannot say that data must fill the declared shape or that pixels lie in [0, 1], so a schema-valid
    # tensor may well be refused (422): that check alone is left out.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


def test_no_route_documents_fastapis_own_validation_body():
    # The page's data routes declared FastAPI's default 422 (`detail` an array) but answer the service's error body.
    document = create_app(Settings()).openapi()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                assert "HTTPValidationError" not in str(response), (method, path, status)
