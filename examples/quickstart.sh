#!/usr/bin/env bash
# The embedded default, with nothing downloaded: the Python standard library's own sources
# become a corpus, a SentencePiece tokenizer is trained on it, the corpus is written as
# Megatron .bin/.idx shards, and the tiny model is trained on CPU, first on one process
# (TP=1), then on two gloo ranks with tensor parallelism (TP=2) through torchrun, and the
# TP=2 checkpoint is exported as a Hugging Face Llama directory, evaluated on the example
# tasks of megatron_sota/conf/eval/tasks/ and asked to complete a prompt.
# Everything lands in ${QUICKSTART_DIR:-.quickstart}/. Takes a few minutes on 2 cores.
# QUICKSTART_VERBOSE=1 also shows the tools' own logs (SentencePiece's trainer, megatron-core's INFO lines).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${QUICKSTART_DIR:-.quickstart}
ITERS=${QUICKSTART_ITERS:-200}
VERBOSE=() TRAIN_VERBOSE=()
if [[ "${QUICKSTART_VERBOSE:-0}" == 1 ]]; then
  VERBOSE=(--verbose) TRAIN_VERBOSE=(logging.level=DEBUG)
fi
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/8 corpus from the standard library"
python tools/build_stdlib_corpus.py --output "$OUT/stdlib.jsonl" --overwrite
echo "== 2/8 SentencePiece BPE tokenizer (vocab 8000)"
python tools/train_tokenizer.py --input "$OUT/stdlib.jsonl" --model-prefix "$OUT/tokenizer" --overwrite --vocab-size 8000 \
  "${VERBOSE[@]}"
echo "== 3/8 Megatron shards"
python tools/preprocess_data.py --input "$OUT/stdlib.jsonl" --output-prefix "$OUT/stdlib" --overwrite \
  --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" --append-eod --workers 2

COMMON=(experiment=quickstart_cpu "train.iters=$ITERS" "data.paths=[$OUT/stdlib_text_document]"
        tokenizer=sentencepiece "tokenizer.model=$OUT/tokenizer.model" "${TRAIN_VERBOSE[@]}")
rm -rf "$OUT/tp1" "$OUT/tp2"
echo "== 4/8 train tiny, TP=1 (one process)"
python -m megatron_sota.train "${COMMON[@]}" "hydra.run.dir=$OUT/tp1"
echo "== 5/8 train tiny, TP=2 (two gloo ranks via torchrun)"
# In-loop evaluation at the last step: the perplexity task, scored on the TP=2 weights being trained.
# OMP_NUM_THREADS=1 is what torchrun gives each rank when it is unset, announced by a banner; set here, the
# ranks run the same way without it.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} torchrun --nproc-per-node 2 -m megatron_sota.train "${COMMON[@]}" parallel.tp=2 "hydra.run.dir=$OUT/tp2" \
  "eval.tasks=[python_docs_ppl]" "eval.interval=$ITERS"

echo "== 6/8 export the TP=2 checkpoint to Hugging Face format"
python tools/convert_checkpoint.py export --load "$OUT/tp2/checkpoints" --save "$OUT/hf_tiny" --overwrite --no-progress \
  "${VERBOSE[@]}"

echo "== 7/8 evaluate the TP=2 checkpoint (tiny is far too small to answer arithmetic: expect chance level)"
python tools/evaluate.py --load "$OUT/tp2/checkpoints" --task arithmetic_mc --task python_docs_ppl \
  --output "$OUT/eval_report.json" --no-progress "${VERBOSE[@]}"
echo "== 8/8 complete a prompt (greedy, KV cache)"
python tools/generate.py --load "$OUT/tp2/checkpoints" --prompt "import os
import sys

def main(" --temperature 0 --max-new-tokens 40 "${VERBOSE[@]}"

echo "== loss, TP=1 vs TP=2 (same seed, same data: the curves should agree)"
python tools/compare_runs.py "$OUT/tp1" "$OUT/tp2"
echo "quickstart finished in $(( $(date +%s) - start ))s; metrics in $OUT/tp*/metrics.jsonl, TensorBoard in $OUT/tp*/tensorboard,"
echo "evaluation report in $OUT/eval_report.json; Hugging Face model in $OUT/hf_tiny (transformers.AutoModelForCausalLM.from_pretrained(\"$OUT/hf_tiny\"))"
