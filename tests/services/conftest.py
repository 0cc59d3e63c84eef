"""Fixtures for the service tests (the shared ones live in ``tests/conftest.py``)."""

from tests.services.tiered_support import tiered_factory

__all__ = ["tiered_factory"]
