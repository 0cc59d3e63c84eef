"""The OpenAPI page declares the key header, and no key material leaks into bodies or logs."""

from __future__ import annotations

import logging

import pytest

from app.domain.keys import digest, generate_api_key
from tests.api.conftest import Api


async def test_openapi_declares_the_api_key_scheme_on_protected_routes(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()

    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    for path, method in [
        ("/v1/me", "get"),
        ("/v1/keys", "get"),
        ("/v1/keys", "post"),
        ("/v1/keys/{prefix}/revoke", "post"),
        ("/v1/keys/{prefix}/rotate", "post"),
    ]:
        assert schema["paths"][path][method]["security"] == [{"ApiKeyAuth": []}], path
    assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_docs_page_is_served(api: Api) -> None:
    response = await api.client.get("/docs")

    assert response.status_code == 200
    assert "swagger" in response.text.lower()


async def test_unknown_route_answers_json(api: Api) -> None:
    response = await api.client.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_no_plaintext_or_digest_in_logs_or_later_responses(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="app")
    created = await api.client.post(
        "/v1/keys", headers=api.auth(), json={"name": "bot", "scopes": ["read"]}
    )
    key = created.json()["key"]
    prefix = created.json()["prefix"]
    unknown = generate_api_key().plaintext

    later = [
        await api.client.get("/v1/me", headers=api.auth(key)),
        await api.client.get("/v1/me", headers=api.auth(unknown)),
        await api.client.get("/v1/keys", headers=api.auth()),
        await api.client.post(f"/v1/keys/{prefix}/rotate", headers=api.auth()),
        await api.client.post(f"/v1/keys/{prefix}/revoke", headers=api.auth()),
        await api.client.get("/v1/me", headers=api.auth(key)),
        await api.client.get("/readyz"),
    ]

    secrets = [key, digest(key), unknown, digest(unknown), api.admin_key, digest(api.admin_key)]
    for response in later:
        for secret in secrets:
            assert secret not in response.text
    for secret in secrets:
        assert secret not in caplog.text
    assert prefix in caplog.text  # the public prefix is what logs name
