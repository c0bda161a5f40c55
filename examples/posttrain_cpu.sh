#!/usr/bin/env bash
# Post-training on CPU, with nothing downloaded, in the quickstart's spirit: the repository's own small
# instruction conversations (megatron_sota/posttrain/example_data.py), a byte-level BPE tokenizer that holds
# ChatML's <|im_start|>/<|im_end|> as single tokens (trained on the standard library's sources and those
# conversations), a short pretraining of the tiny model, then supervised fine-tuning from it (packed rows,
# loss on assistant tokens) through `python -m megatron_sota.posttrain`, and its Hugging Face export, whose
# tokenizer_config.json carries the chat template the run trained with; then DPO from the SFT model on
# right-vs-wrong answers to the same tasks, with the held-out preference accuracy per task.
# Everything lands in ${POSTTRAIN_DIR:-.posttrain}/. POSTTRAIN_PRETRAIN_ITERS / POSTTRAIN_SFT_EPOCHS /
# POSTTRAIN_DPO_EPOCHS shorten it. The last step scores the exports with transformers: pip install -e '.[hf]'.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${POSTTRAIN_DIR:-.posttrain}
PRETRAIN_ITERS=${POSTTRAIN_PRETRAIN_ITERS:-200}
SFT_EPOCHS=${POSTTRAIN_SFT_EPOCHS:-2}
DPO_EPOCHS=${POSTTRAIN_DPO_EPOCHS:-2}
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/8 example data and a tokenizer corpus (the standard library + the conversations' text)"
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
echo "== 2/8 byte-level BPE tokenizer with the chat tokens (vocab 8000)"
python tools/train_tokenizer.py --library huggingface --input "$OUT/stdlib.jsonl" "$OUT/conversations.jsonl" \
  --model-prefix "$OUT/tokenizer" --vocab-size 8000 --special-tokens "<|im_start|>" "<|im_end|>" --overwrite --quiet
echo "== 3/8 Megatron shards of the standard library"
python tools/preprocess_data.py --input "$OUT/stdlib.jsonl" --output-prefix "$OUT/stdlib" --overwrite \
  --tokenizer-type HuggingFaceTokenizer --tokenizer-model "$OUT/tokenizer" --append-eod --workers 2 --no-progress

TOKENIZER=(tokenizer=huggingface "tokenizer.model=$OUT/tokenizer")
rm -rf "$OUT/base" "$OUT/sft" "$OUT/dpo"
echo "== 4/8 pretrain tiny for $PRETRAIN_ITERS steps (the base model)"
python -m megatron_sota.train experiment=quickstart_cpu "train.iters=$PRETRAIN_ITERS" \
  "data.paths=[$OUT/stdlib_text_document]" "${TOKENIZER[@]}" "hydra.run.dir=$OUT/base"

echo "== 5/8 supervised fine-tuning from it: packed conversations, loss on the assistant's tokens"
# The spec's defaults (lr 1e-5, 128 conversations per step) suit large models; this tiny one on a few
# thousand short conversations learns in a minute with a larger rate and smaller batches.
python -m megatron_sota.posttrain posttrain=sft "posttrain.train_files=[$OUT/data/sft_train.jsonl]" \
  "posttrain.valid_files=[$OUT/data/sft_valid.jsonl]" "posttrain.epochs=$SFT_EPOCHS" \
  "checkpoint.init_from=$OUT/base/checkpoints" "${TOKENIZER[@]}" model.max_position_embeddings=2048 \
  train.seq_length=512 train.global_batch_size=16 train.micro_batch_size=4 optimizer.lr=3e-4 \
  scheduler.warmup_iters=5 train.eval_interval=20 train.eval_iters=1 logging.interval=5 "hydra.run.dir=$OUT/sft"

echo "== 6/8 export the SFT model to Hugging Face format (its chat template in tokenizer_config.json)"
python tools/convert_checkpoint.py export --load "$OUT/sft/checkpoints" --save "$OUT/hf_sft" --overwrite --no-progress

echo "== 7/8 DPO from the SFT model: right against wrong answers (held-out questions validated every 20 steps)"
# The SFT model is the reference; its log-probs of every pair are computed once and kept in $OUT/dpo.
python -m megatron_sota.posttrain posttrain=dpo "posttrain.train_files=[$OUT/data/preference_train.jsonl]" \
  "posttrain.valid_files=[$OUT/data/preference_valid.jsonl]" "posttrain.epochs=$DPO_EPOCHS" \
  "checkpoint.init_from=$OUT/sft/checkpoints" "${TOKENIZER[@]}" model.max_position_embeddings=2048 \
  train.seq_length=128 train.global_batch_size=16 train.micro_batch_size=8 optimizer.lr=3e-4 \
  scheduler.warmup_iters=5 train.eval_interval=20 logging.interval=10 "hydra.run.dir=$OUT/dpo"
python - "$OUT/dpo/metrics.jsonl" <<'EOF'
import json, sys

rows = [row for row in map(json.loads, open(sys.argv[1])) if "val_rewards/accuracies" in row]
print("held-out preference accuracy: 0 at step 0 (policy = reference, every reward 0), then "
      + ", ".join(f"{row['val_rewards/accuracies']:.3f} at step {row['step']}" for row in rows))
EOF
echo "== 8/8 export the DPO model; held-out accuracy per task (reference: the SFT model's own likelihood preference)"
python tools/convert_checkpoint.py export --load "$OUT/dpo/checkpoints" --save "$OUT/hf_dpo" --overwrite --no-progress
python tools/preference_accuracy.py --policy "$OUT/hf_dpo" --reference "$OUT/hf_sft" \
  --files "$OUT/data/preference_valid.jsonl"

echo "post-training finished in $(( $(date +%s) - start ))s; SFT metrics in $OUT/sft/metrics.jsonl (val_loss: held-out"
echo "assistant-token loss), Hugging Face models in $OUT/hf_sft and $OUT/hf_dpo (AutoTokenizer(...).apply_chat_template"
echo "works on them); DPO metrics (val_rewards/accuracies: held-out preference accuracy) in $OUT/dpo/metrics.jsonl"
