"""tools/curate.py with executor=slurm on a real SLURM: datatrove's job arrays give the same output as the local run."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.curation.runs import read_documents

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def _without_paths(report: dict, root: Path) -> str:
    return json.dumps(report, sort_keys=True).replace(str(root), "<out>")


def test_slurm_executor_gives_the_local_output(slurm_cluster, web_run, tmp_path):
    output = tmp_path / "slurm_out"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "curate.py"), "web", *web_run.overrides, f"output_dir={output}",
         "executor=slurm", f"executor.partition={slurm_cluster.partition}", "executor.poll_seconds=0.5",
         "executor.mem_per_cpu_gb=1"],
        env=slurm_cluster.job_env(), capture_output=True, text=True, timeout=840, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + slurm_cluster.diagnostics()
    # Every stage ran as its own array job (the MinHash buckets as 14 array tasks), chained by dependencies.
    launch = (output / "logs" / "minhash_buckets" / "launch_script.slurm").read_text()
    assert "#SBATCH --array=0-13" in launch and "launch_pickled_pipeline" in launch
    assert len(list((output / "logs" / "minhash_buckets" / "completions").iterdir())) == 14
    for folder in ["documents", "high_quality", *(f"rejected/{r['filter']}" for r in web_run.report["filters"])]:
        assert read_documents(output / folder) == read_documents(web_run.output / folder), folder
    for ext in (".bin", ".idx"):
        name = f"tokenized/curated_text_document{ext}"
        assert (output / name).read_bytes() == (web_run.output / name).read_bytes()
    slurm_report = json.loads((output / "report.json").read_text())
    assert _without_paths(slurm_report, output) == _without_paths(web_run.report, web_run.output)
    with gzip.open(next((output / "documents").glob("*.jsonl.gz")), "rt") as handle:
        assert json.loads(handle.readline())["metadata"]["source"] == "web"
