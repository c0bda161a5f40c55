#!/usr/bin/env bash
# Reinforcement learning on CPU, nothing downloaded: sums of two digits (megatron_sota/posttrain/example_rl_data.py)
# with an exact-match reward. A byte-level BPE tokenizer with ChatML's tokens, a short SFT of a 2-layer model from
# scratch, a reward model (right sums over wrong ones), then GRPO and PPO from the SFT policy, both rewarded by exact
# match (PPO's critic starts from the reward model; posttrain.reward_model=<dir> would score with it instead); the
# 20 held-out prompts (operand pairs never trained on) are answered greedily every 8 steps (heldout_reward in
# metrics.jsonl); last, where each PPO iteration's time went. Everything lands in ${RL_DIR:-.rl}/ (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${RL_DIR:-.rl}
mkdir -p "$OUT"
rm -rf "$OUT/sft" "$OUT/rm" "$OUT/grpo" "$OUT/ppo"

echo "== 1/6 arithmetic prompts, SFT conversations, preference pairs and a tokenizer corpus"
python - "$OUT" <<'PY'
import json, os, random, sys

from megatron_sota.posttrain.example_rl_data import arithmetic_prompt_records, split_pairs, write_rl_example_data

out = sys.argv[1]
data = write_rl_example_data(os.path.join(out, "data"), seed=1234)
train_pairs, _ = split_pairs(1234)
rng = random.Random(0)
with open(os.path.join(out, "data", "preferences.jsonl"), "w") as pairs:
    for record in arithmetic_prompt_records(320, 1239, pairs=train_pairs):
        right = int(record["answer"])
        pairs.write(json.dumps({"prompt": [{"role": "user", "content": record["prompt"]}],
                                "chosen": [{"role": "assistant", "content": str(right)}],
                                "rejected": [{"role": "assistant", "content": str(right + rng.choice([-2, -1, 1, 2]))}]}) + "\n")
with open(data.sft_train) as records, open(os.path.join(out, "corpus.jsonl"), "w") as corpus:
    for line in records:
        for message in json.loads(line)["messages"]:
            corpus.write(json.dumps({"text": message["content"]}) + "\n")
PY
echo "== 2/6 byte-level BPE tokenizer with the chat tokens"
python tools/train_tokenizer.py --library huggingface --input "$OUT/corpus.jsonl" --model-prefix "$OUT/tokenizer" \
  --vocab-size 300 --special-tokens "<|im_start|>" "<|im_end|>" --overwrite --quiet

COMMON=(tokenizer=huggingface "tokenizer.model=$OUT/tokenizer" model.num_layers=2 model.hidden_size=64
  model.ffn_hidden_size=128 model.num_attention_heads=4 model.num_query_groups=4
  model.untie_embeddings_and_output_weights=true train.seq_length=64 data.num_workers=0 logging.tensorboard=false)
echo "== 3/6 SFT from scratch (120 steps of 16 conversations)"
python -m megatron_sota.posttrain posttrain=sft "posttrain.train_files=[$OUT/data/rl_sft_train.jsonl]" "${COMMON[@]}" \
  train.iters=120 train.micro_batch_size=8 train.global_batch_size=16 optimizer.lr=3e-3 scheduler.warmup_iters=3 \
  logging.interval=20 "hydra.run.dir=$OUT/sft"
echo "== 4/6 reward model (20 steps of 16 pairs)"
python -m megatron_sota.posttrain posttrain=rm "posttrain.train_files=[$OUT/data/preferences.jsonl]" "${COMMON[@]}" \
  train.iters=20 train.micro_batch_size=8 train.global_batch_size=16 optimizer.lr=3e-3 scheduler.warmup_iters=2 \
  logging.interval=5 "hydra.run.dir=$OUT/rm"

RL=("${COMMON[@]}" "posttrain.train_files=[$OUT/data/rl_prompts_train.jsonl]"
  "posttrain.valid_files=[$OUT/data/rl_prompts_valid.jsonl]" "checkpoint.init_from=$OUT/sft/checkpoints"
  posttrain.rollout_prompts=16 posttrain.samples_per_prompt=4 posttrain.max_new_tokens=8 train.eval_interval=8
  train.micro_batch_size=4 train.global_batch_size=16 scheduler.warmup_iters=0)
echo "== 5/6 GRPO, exact-match reward (48 steps: 12 rollout batches of 16 prompts x 4 samples)"
python -m megatron_sota.posttrain posttrain=grpo "${RL[@]}" posttrain.reward_function=exact_match \
  train.iters=48 optimizer.lr=${RL_GRPO_LR:-2e-4} "hydra.run.dir=$OUT/grpo"
echo "== 6/6 PPO, exact-match reward, the critic started from the reward model (64 steps: 8 batches, 2 epochs each)"
python -m megatron_sota.posttrain posttrain=ppo "${RL[@]}" posttrain.reward_function=exact_match \
  "posttrain.critic_model=$OUT/rm/checkpoints" posttrain.ppo_epochs=2 train.iters=64 optimizer.lr=${RL_PPO_LR:-1e-4} \
  "hydra.run.dir=$OUT/ppo"

python - "$OUT" <<'PY'
import json, os, sys
for name in ("grpo", "ppo"):
    rows = [json.loads(line) for line in open(os.path.join(sys.argv[1], name, "metrics.jsonl"))]
    curve = [f"{r['step'] - ('heldout_reward_start' in r)}: {r.get('heldout_reward_start', r.get('heldout_reward')):.3f}"
             for r in rows if "heldout_reward_start" in r or "heldout_reward" in r]
    print(f"{name} held-out mean reward by step: {', '.join(curve)}")
PY
python tools/rl_timing.py "$OUT/ppo"
