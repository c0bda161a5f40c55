"""The model server of the serving tests: the suite's trained tiny checkpoint, served once per session."""

from __future__ import annotations

import pytest

from tests.serving.model_server import model_server

SERVED_NAME = "tiny"


@pytest.fixture(scope="session")
def server_url(checkpoint) -> str:
    with model_server(checkpoint, SERVED_NAME, "--max-batch", "8") as url:
        yield url
