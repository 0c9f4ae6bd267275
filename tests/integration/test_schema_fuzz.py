"""schemathesis against the service's own OpenAPI schema (bounded): no server error, every error in our shape.

Every POST operation of /docs.json gets `MAX_EXAMPLES` generated requests in each mode — positive
(what the schema allows, e.g. any string as base64, any multipart bytes as image) and negative
(what it forbids: wrong types, missing/extra fields). schemathesis's pytest plugin does not load
under pytest 9, so its Hypothesis strategies are driven directly.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation import GenerationMode

from faceserve.http.routes import ANY_KEY, PUBLIC, ROUTES
from tests.support import serve

MAX_EXAMPLES = 20
# Every API route the route table declares (faceserve/http/routes.py), health and the page's files aside.
OPERATIONS = tuple(path[1:] for path, route in ROUTES.items() if route.scope not in (PUBLIC, ANY_KEY))


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    with serve({"FACESERVE_URL_FETCH": "1", "FACESERVE_URL_TIMEOUT_S": "2",
                "FACESERVE_DATA_DIR": str(tmp_path_factory.mktemp("fuzz-data"))}) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server}/docs.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("name", OPERATIONS)
def test_no_server_errors(api_schema, server, name, mode):
    operation = api_schema.find_operation_by_label(f"POST /{name}")
    assert operation is not None, f"POST /{name} missing from the OpenAPI schema"
    seen = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def run(case):
        response = case.call(base_url=server, timeout=30)
        seen.append(response.status_code)
        assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:500])
        kind = (response.headers.get("content-type") or [""])[0]
        if response.status_code >= 400 and kind.startswith("application/json"):
            body = response.json()
            assert isinstance(body, dict) and {"error", "message"} <= set(body), body

    run()
    assert seen, "no request was generated"
