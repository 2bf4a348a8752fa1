"""monitor/openapi.json is a valid OpenAPI 3.1 document (what the live-daemon tests in
tests/test_api_schema.py hold the answers to)."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = json.loads(resources.files("monitor").joinpath("openapi.json").read_text())
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_the_validator_refuses_a_broken_document() -> None:
    doc = json.loads(resources.files("monitor").joinpath("openapi.json").read_text())
    del doc["paths"]["/api/v1/checks/{name}"]["get"]["parameters"][0]["in"]
    with pytest.raises(OpenAPIValidationError):
        validate(doc)
