"""A StateStore on each backend (via the session's `state_database_url`), closed after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exports_pipeline.crypto import SecretBox, generate_key
from exports_pipeline.state import StateStore


@pytest.fixture
def store(state_database_url: str) -> Iterator[StateStore]:
    store = StateStore(database_url=state_database_url)
    yield store
    store.dispose()


@pytest.fixture(scope="session")
def box() -> SecretBox:
    return SecretBox(generate_key())


@pytest.fixture
def backend(state_database_url: str) -> str:
    return "postgresql" if state_database_url.startswith("postgresql") else "sqlite"
