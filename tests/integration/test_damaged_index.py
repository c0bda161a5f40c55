"""A truncated .idx stops the trainer's command line with one message naming the file, and nothing else on stderr.

megatron-core's IndexedDataset, half-built on such a file, would print an "Exception ignored in __del__" traceback
when collected; that goes through sys.unraisablehook to stderr, so only a real process shows it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.random_shards import VOCAB, write_shard

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_truncated_index_is_named_by_the_trainer_without_a_second_traceback(tmp_path):
    prefix = write_shard(str(tmp_path / "cut_text_document"), documents=50)
    idx = prefix + ".idx"
    whole = os.path.getsize(idx)  # 34 header bytes + 50 * 12 + 51 * 8
    with open(idx, "r+b") as handle:
        handle.truncate(whole // 2)
    command = [sys.executable, "-m", "megatron_sota.train", "runtime.device=cpu", "tokenizer.type=NullTokenizer",
               f"tokenizer.vocab_size={VOCAB}", f"data.paths=[{prefix}]", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    printed = result.stdout + result.stderr
    assert result.returncode == 2, printed[-3000:]
    assert (f"data.paths[0]: {idx}: expected {whole:,} bytes (50 sequences and 51 document boundaries, as its "
            f"header says), found {whole // 2:,} bytes; the index is truncated") in printed, printed[-3000:]
    assert "Exception ignored" not in printed and "Traceback" not in printed, printed[-3000:]
