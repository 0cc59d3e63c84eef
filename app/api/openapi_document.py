"""Finishing touches on the OpenAPI document, so it lists every status a route can answer.

Routes declare their own answers (``AuthenticatedRoute`` the 400/401/403, the key routes their
404/409/422). Two kinds cannot be declared per route:

- the edge's refusals, which hold for every route because they happen before routing (408, 413
  and 431 from the request limits, 503 when a worker is at its connection cap);
- FastAPI's automatic 422, added to any route with a parameter in FastAPI's own body shape,
  even where nothing can fail (a plain string path parameter). The service answers 422 in one
  shape (``ValidationErrorOut``) and only on the routes that declare it, so the automatic one is
  removed, with its component schemas.
"""

from __future__ import annotations

from typing import Any

from app.api.error_schemas import ErrorOut

_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
_FASTAPI_422_SCHEMAS = ("HTTPValidationError", "ValidationError")
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

EDGE_RESPONSES: dict[str, str] = {
    "408": "The request's headers did not all arrive within HTTP_HEADER_TIMEOUT_SECONDS",
    "413": "The body is larger than HTTP_MAX_BODY_BYTES",
    "431": "More than HTTP_MAX_HEADER_COUNT headers, or a header block over HTTP_MAX_HEADER_BYTES",
    "503": "The key database is unreachable and the key is not cached, or the worker already "
    "holds HTTP_MAX_CONNECTIONS_PER_WORKER connections",
}


def _is_fastapi_default_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def complete_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the edge's answers to every operation and drop FastAPI's automatic 422."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault(
        "ErrorOut", ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in _HTTP_METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if "422" in responses and _is_fastapi_default_422(responses["422"]):
                del responses["422"]
            for status, description in EDGE_RESPONSES.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": dict(_ERROR_REF)}},
                    },
                )
    for name in _FASTAPI_422_SCHEMAS:
        components.pop(name, None)
    return schema
