#!/usr/bin/env bash
# Post-training on CPU, with nothing downloaded, in the quickstart's spirit: the repository's own small
# instruction conversations (megatron_sota/posttrain/example_data.py), a byte-level BPE tokenizer that holds
# ChatML's <|im_start|>/<|im_end|> as single tokens (trained on the standard library's sources and those
# conversations), a short pretraining of the tiny model, then supervised fine-tuning from it (packed rows,
# loss on assistant tokens) through `python -m megatron_sota.posttrain`, and its Hugging Face export, whose
# tokenizer_config.json carries the chat template the run trained with.
# Everything lands in ${POSTTRAIN_DIR:-.posttrain}/. POSTTRAIN_PRETRAIN_ITERS / POSTTRAIN_SFT_EPOCHS shorten it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${POSTTRAIN_DIR:-.posttrain}
PRETRAIN_ITERS=${POSTTRAIN_PRETRAIN_ITERS:-200}
SFT_EPOCHS=${POSTTRAIN_SFT_EPOCHS:-2}
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/6 example data and a tokenizer corpus (the standard library + the conversations' text)"
python tools/build_stdlib_corpus.py --output "$OUT/stdlib.jsonl" --overwrite
python - "$OUT" <<'EOF'
import json, os, sys

from megatron_sota.posttrain.example_data import counts, write_example_data

out = sys.argv[1]
data = write_example_data(os.path.join(out, "data"))
with open(data.sft_train) as records, open(os.path.join(out, "conversations.jsonl"), "w") as corpus:
    for line in records:
        for message in json.loads(line)["messages"]:
            corpus.write(json.dumps({"text": message["content"]}) + "\n")
print("example data:", counts(data))
EOF
echo "== 2/6 byte-level BPE tokenizer with the chat tokens (vocab 8000)"
python tools/train_tokenizer.py --library huggingface --input "$OUT/stdlib.jsonl" "$OUT/conversations.jsonl" \
  --model-prefix "$OUT/tokenizer" --vocab-size 8000 --special-tokens "<|im_start|>" "<|im_end|>" --overwrite --quiet
echo "== 3/6 Megatron shards of the standard library"
python tools/preprocess_data.py --input "$OUT/stdlib.jsonl" --output-prefix "$OUT/stdlib" --overwrite \
  --tokenizer-type HuggingFaceTokenizer --tokenizer-model "$OUT/tokenizer" --append-eod --workers 2 --no-progress

TOKENIZER=(tokenizer=huggingface "tokenizer.model=$OUT/tokenizer")
rm -rf "$OUT/base" "$OUT/sft"
echo "== 4/6 pretrain tiny for $PRETRAIN_ITERS steps (the base model)"
python -m megatron_sota.train experiment=quickstart_cpu "train.iters=$PRETRAIN_ITERS" \
  "data.paths=[$OUT/stdlib_text_document]" "${TOKENIZER[@]}" "hydra.run.dir=$OUT/base"

echo "== 5/6 supervised fine-tuning from it: packed conversations, loss on the assistant's tokens"
# The spec's defaults (lr 1e-5, 128 conversations per step) suit large models; this tiny one on a few
# thousand short conversations learns in a minute with a larger rate and smaller batches.
python -m megatron_sota.posttrain posttrain=sft "posttrain.train_files=[$OUT/data/sft_train.jsonl]" \
  "posttrain.valid_files=[$OUT/data/sft_valid.jsonl]" "posttrain.epochs=$SFT_EPOCHS" \
  "checkpoint.init_from=$OUT/base/checkpoints" "${TOKENIZER[@]}" model.max_position_embeddings=2048 \
  train.seq_length=512 train.global_batch_size=16 train.micro_batch_size=4 optimizer.lr=3e-4 \
  scheduler.warmup_iters=5 train.eval_interval=20 train.eval_iters=1 logging.interval=5 "hydra.run.dir=$OUT/sft"

echo "== 6/6 export the SFT model to Hugging Face format (its chat template in tokenizer_config.json)"
python tools/convert_checkpoint.py export --load "$OUT/sft/checkpoints" --save "$OUT/hf_sft" --overwrite --no-progress

# ---- DPO (to come) -------------------------------------------------------------------------------------
# Once posttrain=dpo lands: DPO from "$OUT/sft/checkpoints" on "$OUT/data/preference_{train,valid}.jsonl",
# then its export. Append it here.
# ---------------------------------------------------------------------------------------------------------

echo "post-training finished in $(( $(date +%s) - start ))s; SFT metrics in $OUT/sft/metrics.jsonl (val_loss: held-out"
echo "assistant-token loss), Hugging Face model in $OUT/hf_sft (AutoTokenizer(...).apply_chat_template works on it)"
