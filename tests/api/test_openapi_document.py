"""The OpenAPI document is honest (every status with its body) and its examples execute;
``/docs`` and ``/redoc`` need nothing but the service."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.domain.scopes import KNOWN_SCOPES
from tests.api.conftest import Api

OPERATIONS = [
    ("/v1/me", "get", {"400", "401"}),
    ("/v1/keys", "get", {"400", "401", "403"}),
    ("/v1/keys", "post", {"400", "401", "403", "422"}),
    ("/v1/keys/{prefix}/revoke", "post", {"400", "401", "403", "404"}),
    ("/v1/keys/{prefix}/rotate", "post", {"400", "401", "403", "404", "409", "422"}),
    ("/healthz", "get", set()),
]
EDGE = {"408", "413", "431", "503"}


async def _document(api: Api) -> dict[str, Any]:
    document: dict[str, Any] = (await api.client.get("/openapi.json")).json()
    return document


def _schema_ref(response: dict[str, Any]) -> str:
    ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


@pytest.mark.parametrize(("path", "method", "statuses"), OPERATIONS)
async def test_every_error_status_is_documented_with_its_body(
    api: Api, path: str, method: str, statuses: set[str]
) -> None:
    responses = (await _document(api))["paths"][path][method]["responses"]

    errors = {status for status in responses if status.startswith(("4", "5"))}
    assert errors == statuses | EDGE
    for status in errors:
        expected = "ValidationErrorOut" if status == "422" else "ErrorOut"
        assert _schema_ref(responses[status]) == expected, (path, status)


async def test_one_422_shape_and_no_fastapi_default(api: Api) -> None:
    document = await _document(api)
    schemas = document["components"]["schemas"]

    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    problem = schemas["ValidationProblem"]
    assert set(problem["properties"]) == {"loc", "msg", "type"}
    assert schemas["ErrorOut"]["properties"]["detail"]["type"] == "string"


async def test_scopes_are_an_enum_of_the_known_scopes(api: Api) -> None:
    schemas = (await _document(api))["components"]["schemas"]

    items = schemas["CreateKeyRequest"]["properties"]["scopes"]["items"]
    assert set(items["enum"]) == KNOWN_SCOPES


async def test_the_documented_examples_succeed_when_executed(api: Api) -> None:
    schemas = (await _document(api))["components"]["schemas"]
    [create_example] = schemas["CreateKeyRequest"]["examples"]
    [rotate_example] = schemas["RotateKeyRequest"]["examples"]

    created = await api.client.post("/v1/keys", headers=api.auth(), json=create_example)
    assert created.status_code == 201, created.text
    rotated = await api.client.post(
        f"/v1/keys/{created.json()['prefix']}/rotate", headers=api.auth(), json=rotate_example
    )
    assert rotated.status_code == 201, rotated.text
    for name, model in (("CreateKeyRequest", create_example), ("RotateKeyRequest", rotate_example)):
        for field, value in model.items():
            assert schemas[name]["properties"][field]["examples"] == [value]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_load_only_the_service_s_own_assets(api: Api, page: str) -> None:
    response = await api.client.get(page)

    assert response.status_code == 200
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", response.text), response.text
    assets = re.findall(r"(?:src|href)=[\"']([^\"']+)", response.text)
    assert assets and all(url.startswith("/static/docs/") for url in assets), assets
    for url in assets:
        asset = await api.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
