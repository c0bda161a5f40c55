"""The optional last data stages: kept documents to Megatron .bin/.idx through the project's own preprocessing.

One shard per task, then one in-order merge, so the result is byte-identical to tools/preprocess_data.py run
over documents/ (files in name order). It must not change or drop documents.
"""

from __future__ import annotations

import os

from typing import TYPE_CHECKING

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

if TYPE_CHECKING:
    from megatron_sota.data.encode_worker import TokenizerSpec

TEXT_KEY = "text"


def _text_prefix(prefix: str) -> str:
    """<prefix>_text_document, as tools/preprocess_data.py names its output."""
    return f"{prefix}_{TEXT_KEY}_document"


def shard_prefix(shards_dir: str, rank: int) -> str:
    return _text_prefix(os.path.join(shards_dir, f"{rank:05d}"))


class TokenizeShard(PipelineStep):
    """Tokenizes this task's ``<documents>/<rank>.jsonl.gz`` (absent: the task kept nothing) into a shard."""

    type = "🔢 - TOKENIZE"
    name = "tokenize shard"

    def __init__(self, documents_dir: str, shards_dir: str, tokenizer: TokenizerSpec, append_eod: bool) -> None:
        super().__init__()
        self.documents_dir = documents_dir
        self.shards_dir = shards_dir
        self.tokenizer = tokenizer
        self.append_eod = append_eod

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        documents = os.path.join(self.documents_dir, f"{rank:05d}.jsonl.gz")
        if not os.path.exists(documents):
            return
        from megatron_sota.data.preprocess import PreprocessOptions, preprocess  # megatron-core: only where it is used

        stats = preprocess(
            PreprocessOptions(
                inputs=(documents,),
                output_prefix=os.path.join(self.shards_dir, f"{rank:05d}"),
                tokenizer=self.tokenizer,
                json_keys=(TEXT_KEY,),
                append_eod=self.append_eod,
                progress=False,
            )
        )
        self.stat_update("documents", value=stats.documents)
        self.stat_update("tokens", value=stats.tokens)


class MergeShards(PipelineStep):
    """Concatenates the shards in rank order into ``<output_prefix>_text_document.bin/.idx``."""

    type = "🔢 - TOKENIZE"
    name = "merge shards"

    def __init__(self, shards_dir: str, shard_count: int, output_prefix: str) -> None:
        super().__init__()
        self.shards_dir = shards_dir
        self.shard_count = shard_count
        self.output_prefix = output_prefix

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        prefixes = [shard_prefix(self.shards_dir, r) for r in range(self.shard_count)]
        prefixes = [p for p in prefixes if os.path.exists(p + ".idx")]
        if not prefixes:
            return  # nothing was kept; the report says so
        from megatron_sota.data.merge import merge_datasets

        documents, tokens = merge_datasets(prefixes, _text_prefix(self.output_prefix))
        self.stat_update("documents", value=documents)
        self.stat_update("tokens", value=tokens)
