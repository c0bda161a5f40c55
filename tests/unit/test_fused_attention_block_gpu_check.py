"""examples/gpu/cp_attention_check.py, the H200 run's CP attention check, runs on CPU and passes only when the CP
shares it reassembles equal full attention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cp_attention_check_script_passes_on_cpu_and_writes_every_variant(tmp_path):
    out = tmp_path / "cp.json"
    command = [sys.executable, str(REPO / "examples/gpu/cp_attention_check.py"), "--device", "cpu", "--seq", "64",
               "--heads", "4", "--kv-heads", "2", "--head-dim", "8", "--cp", "2", "4", "--warmup", "0",
               "--repeats", "1", "--json", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert [(r["variant"], r["cp"]) for r in result["rows"]] == [("sdpa (whole sequence)", 1)] + [
        (variant, cp) for cp in (2, 4) for variant in ("cp blocks: fused cpu flash", "cp blocks: matmul")
    ]
    assert result["passed"] and all(r.get("passed", True) for r in result["rows"])
    assert "| cp blocks: fused cpu flash | 4 |" in done.stdout
