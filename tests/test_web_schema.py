"""The dashboard's API against its own published OpenAPI document, with schemathesis:
generated requests to every operation get answers the document allows, never a 500."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from flowforge.web import create_app  # noqa: E402
from tests import fixture_web  # noqa: E402

EXAMPLES = 20  # per operation: the whole check stays within a few seconds


def test_api_conforms_to_its_openapi_document(tmp_path):
    """Each operation answers generated requests as the published document says it may."""
    fixture_web.flaky.state_dir = str(tmp_path / "state")
    try:
        fixture_web.flaky.run()  # one saved run, so the listings are not empty
    finally:
        fixture_web.flaky.state_dir = "state"
    # given no workflow files: nothing can be started; schemathesis calls it "testserver"
    app = create_app(tmp_path / "state", allowed_hosts=["testserver"])
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate()

        check()
    assert "POST /api/v1/workflows/{name}/runs" in labels and len(labels) >= 8
