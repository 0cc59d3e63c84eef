"""The two error bodies the service answers with, as models for the OpenAPI document.

Every error is ``{"detail": "..."}`` except a 422, which is always a list of problems
``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``: whether FastAPI's request
validation or the service itself refused the body, a client reads the field at fault from
``loc`` in one way (``app/api/errors.py`` builds both).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Responses = dict[int | str, dict[str, Any]]
"""What FastAPI's ``responses=`` takes."""


class ErrorOut(BaseModel):
    """Every error answer but 422: one human-readable line, never key material."""

    detail: str = Field(examples=["invalid or missing API key"])


class ValidationProblem(BaseModel):
    """One thing wrong with a request: where (``loc``), what (``msg``) and its kind (``type``)."""

    loc: list[str | int] = Field(
        description="Where the problem is: the request part, then the field path",
        examples=[["body", "scopes", 0]],
    )
    msg: str = Field(examples=["unknown scope 'superuser': expected one of admin, read, write"])
    type: str = Field(examples=["unknown_scope"])


class ValidationErrorOut(BaseModel):
    """A 422: every problem found in the request, the input itself never echoed."""

    detail: list[ValidationProblem]


def error_response(description: str) -> dict[str, Any]:
    """A ``responses=`` entry for an error answered with ``ErrorOut``."""
    return {"model": ErrorOut, "description": description}


VALIDATION_RESPONSE: Responses = {
    422: {
        "model": ValidationErrorOut,
        "description": "The body is not valid: each problem names its field in `loc`",
    }
}
