"""Fixtures the post-training tests share across modules: the PPO/GRPO inputs (a policy and a reward model
trained here) are made once per session, only when a test asks for them."""

from __future__ import annotations

import pytest

from tests.posttrain.rl_jobs import RLInputs, make_inputs


@pytest.fixture(scope="session")
def rl_inputs(tmp_path_factory) -> RLInputs:
    return make_inputs(tmp_path_factory.mktemp("rl_inputs"))
