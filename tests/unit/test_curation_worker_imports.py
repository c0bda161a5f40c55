"""A curation worker imports what its pipeline's steps need, not torch or megatron-core.

datatrove's local executor starts workers with forkserver, and each worker imports the modules of the steps it
unpickles for every stage; megatron-core (with torch) costs seconds there, more than a stage of 5,000 documents takes.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_curation_stage_modules_import_neither_torch_nor_megatron_core():
    modules = ["megatron_sota.curation.stages", "megatron_sota.curation.word_split", "megatron_sota.curation.filters",
               "megatron_sota.curation.tally", "megatron_sota.curation.tokenize_steps", "megatron_sota.data.tokenizer"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in ('torch', 'megatron.core') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"imported by the curation workers' modules: {result.stdout.strip()}"
