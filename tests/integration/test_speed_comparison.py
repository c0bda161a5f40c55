"""tools/speed_comparison.py, the H200 driver, on CPU: baseline parsing, loss gate, table, one real variant."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("speed_comparison", os.path.join(REPO, "tools", "speed_comparison.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_baseline_row_is_read_from_the_scripts_result_line(driver, tmp_path):
    fake = tmp_path / "baseline.py"
    row = {"variant": "hf_llama_bf16", "step_s": 0.36, "tokens_per_s": 45686, "mfu_vs_989": 0.444, "peak_mem_gib": 46.3}
    fake.write_text(f"import sys\nassert sys.argv[1] == 'hf_bf16'\nprint('noise')\nprint('RESULT ' + {json.dumps(json.dumps(row))})\n")
    outcome = driver.run_baseline(str(fake), timeout=60)
    assert (outcome.status, outcome.tokens_per_s, outcome.mfu, outcome.peak_memory_gib) == ("ok", 45686, 0.444, 46.3)
    fake.write_text("import sys\nsys.exit(3)\n")
    assert driver.run_baseline(str(fake), timeout=60).status.startswith("failed rc=3")


def test_a_variant_whose_first_losses_differ_is_marked_and_ratios_use_the_baseline(driver):
    Outcome = driver.Outcome
    outcomes = [
        Outcome("hf", "baseline", tokens_per_s=40000.0, mfu=0.4),
        Outcome("unfused", "project", tokens_per_s=38000.0, mfu=0.38, losses=[10.0, 9.0, 8.0, 7.0]),
        Outcome("fused", "project", tokens_per_s=46000.0, mfu=0.46, losses=[10.0, 9.05, 8.0, 1.0]),
        Outcome("broken", "project", tokens_per_s=60000.0, mfu=0.6, losses=[10.0, 9.5, 8.0]),
    ]
    driver.check_losses(outcomes, "unfused", first=3, rel_tol=1e-2)
    assert outcomes[2].status == "ok" and outcomes[2].detail["loss_rel_diff"] == pytest.approx(0.05 / 9.0)
    assert outcomes[3].status.startswith("LOSS MISMATCH")
    table = driver.format_table(outcomes)
    assert "1.150x" in table and "0.950x" in table and "LOSS MISMATCH" in table


@pytest.mark.slow
def test_cpu_smoke_runs_a_real_variant_through_the_benchmark(driver, tmp_path, capsys):
    code = driver.main(["--cpu-smoke", "--only", "unfused", "--steps", "2", "--warmup", "2", "--out", str(tmp_path),
                        "--run-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / "speed_summary.json").read_text())
    assert [row["name"] for row in summary] == ["unfused"]
    assert summary[0]["status"] == "ok" and summary[0]["tokens_per_s"] > 0 and len(summary[0]["losses"]) == 4
    assert summary[0]["detail"]["loss_rel_diff"] == 0.0  # the reference against itself
