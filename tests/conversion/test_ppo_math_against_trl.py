"""PPO and GRPO math against TRL's own functions: trl 1.12.0, the last release with PPOTrainer (removed in 1.13).

trl 1.12 lives beside the dev environment's newer TRL in .ci/trl-1.12.0 (.ci/run installs it there without
dependencies) and runs in a subprocess whose sys.path starts there. What 1.12 exposes as functions is compared
here: masked_mean/masked_var/masked_whiten (trl.experimental.ppo.ppo_trainer), entropy_from_logits and nanstd
(trl.trainer.utils, the std GRPOTrainer divides by). Its GAE, policy and value losses and its reward placement are
inline in PPOTrainer.train, and GRPO's group baseline inline in GRPOTrainer._generate_and_score_completions
(1.12 and 1.16): those are checked against the papers in tests/posttrain/test_ppo_math.py.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from megatron_sota.posttrain.advantages import group_advantages, masked_mean, masked_var, masked_whiten
from megatron_sota.posttrain.token_logps import token_entropy

TRL_DIR = pathlib.Path(__file__).resolve().parents[2] / ".ci" / "trl-1.12.0"
GROUP = 4

# Run with sys.path[0] = TRL_DIR: reads the inputs, writes TRL's outputs.
_TRL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch, trl
    assert trl.__version__ == "1.12.0", f"expected trl 1.12.0 from {sys.argv[1]}, imported {trl.__version__} from {trl.__file__}"
    from trl.experimental.ppo.ppo_trainer import masked_mean, masked_var, masked_whiten
    from trl.trainer.utils import entropy_from_logits, nanstd

    x = torch.load(sys.argv[2])
    values, mask = x["values"], x["mask"]
    torch.save({
        "file": trl.__file__,
        "mean": masked_mean(values, mask),
        "var": masked_var(values, mask),
        "var_biased": masked_var(values, mask, unbiased=False),
        "whiten": masked_whiten(values, mask),
        "whiten_keep_mean": masked_whiten(values, mask, shift_mean=False),
        "entropy": entropy_from_logits(x["logits"]),
        "group_std": nanstd(x["rewards"].view(-1, x["group"]), dim=1),
    }, sys.argv[3])
    """
)


def _inputs() -> dict:
    """Rows with prompt and right padding of different lengths (finite values there: TRL multiplies by the mask)."""
    generator = torch.Generator().manual_seed(21)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    for row, (start, length) in enumerate([(2, 5), (1, 8), (4, 1), (3, 3)]):
        mask[row, start:start + length] = True
    return {
        "values": torch.randn(4, 9, generator=generator, dtype=torch.float64) * 2 + 0.5,
        "mask": mask,
        "logits": torch.randn(2, 3, 50, generator=generator) * 3,
        "rewards": torch.tensor([1.0, 0.0, 0.0, 1.0, 0.25, 0.5, 0.5, 2.0, 3.0, 3.0, 3.0, 3.0], dtype=torch.float64),
        "group": GROUP,
    }


@pytest.fixture(scope="module")
def trl_outputs(tmp_path_factory):
    if not (TRL_DIR / "trl").is_dir():
        pytest.skip(
            f"trl 1.12.0 is not installed in {TRL_DIR} (.ci/run installs it: "
            f"python -m pip install --no-deps --target {TRL_DIR} trl==1.12.0)"
        )
    work = tmp_path_factory.mktemp("trl112")
    torch.save(_inputs(), work / "in.pt")
    environ = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1")
    subprocess.run(
        [sys.executable, "-c", _TRL_SCRIPT, str(TRL_DIR), str(work / "in.pt"), str(work / "out.pt")],
        check=True, env=environ, timeout=300,
    )
    return torch.load(work / "out.pt")


def test_trl_1_12_is_the_one_imported(trl_outputs):
    assert pathlib.Path(trl_outputs["file"]).resolve().is_relative_to(TRL_DIR.resolve())


def test_masked_statistics_and_whitening_equal_trl_1_12_ppo(trl_outputs):
    x = _inputs()
    values, mask = x["values"], x["mask"]
    close = dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(masked_mean(values, mask), trl_outputs["mean"], **close)
    torch.testing.assert_close(masked_var(values, mask), trl_outputs["var"], **close)
    torch.testing.assert_close(masked_var(values, mask, unbiased=False), trl_outputs["var_biased"], **close)
    # TRL leaves the whitened values outside the mask in place (PPOTrainer fills them afterwards); ours are 0 there.
    for ours, theirs in ((masked_whiten(values, mask), "whiten"), (masked_whiten(values, mask, shift_mean=False), "whiten_keep_mean")):
        torch.testing.assert_close(ours[mask], trl_outputs[theirs][mask], **close, msg=lambda m: f"{theirs}: {m}")
        assert not ours[~mask].any()


def test_token_entropy_equals_trl_1_12_entropy_from_logits(trl_outputs):
    logits = _inputs()["logits"]
    torch.testing.assert_close(token_entropy(logits, logits.shape[-1]), trl_outputs["entropy"], rtol=1e-5, atol=1e-6)


def test_group_advantages_divide_by_the_std_trl_grpo_uses(trl_outputs):
    """GRPOTrainer (1.12 and 1.16): (r − group mean) / (nanstd(group) + 1e-4); the last group is constant (std 0)."""
    rewards = _inputs()["rewards"]
    groups = rewards.view(-1, GROUP)
    expected = (groups - groups.mean(dim=1, keepdim=True)) / (trl_outputs["group_std"][:, None] + 1e-4)
    # nanstd's Bessel factor count / (count − 1) is a float32 division of int tensors: ~1e-8 relative from ours; a
    # biased std would be off by √(4/3).
    torch.testing.assert_close(group_advantages(rewards, GROUP), expected.flatten(), rtol=1e-7, atol=1e-12)
    assert not group_advantages(rewards, GROUP)[-GROUP:].any()
