"""The model server of the serving tests (the suite's trained tiny checkpoint, served once per session) and promtool.

promtool is Debian's `prometheus` package; without it its tests skip, unless MEGATRON_SOTA_REQUIRE_PROMTOOL=1 (CI).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.serving.model_server import SERVED_NAME, model_server


@pytest.fixture(scope="session")
def server_url(checkpoint) -> str:
    with model_server(checkpoint, SERVED_NAME, "--max-batch", "8") as url:
        yield url


PROMTOOL_REQUIRED = "MEGATRON_SOTA_REQUIRE_PROMTOOL"


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found (apt-get install prometheus)"
        if os.environ.get(PROMTOOL_REQUIRED) == "1":
            pytest.fail(f"{message}; {PROMTOOL_REQUIRED}=1 requires it")
        pytest.skip(message)
    return path
