#!/bin/bash
# The four pretraining stages of sota_175b, chained: each starts when the previous one finished
# successfully (--dependency=afterok) from its final weights (checkpoint.init_from), with a fresh
# optimizer and schedule. A stage that is preempted requeues itself and resumes its own checkpoints.
#
#   ROOT=/lustre/sota_175b examples/slurm/submit_sota_175b.sh [extra overrides for every stage...]
#
# Layout (H200 nodes of 8 GPUs, NVLink inside a node, InfiniBand between nodes). The planner
# (tools/plan.py --model sota_175b --gpu h200 --nodes 64 --seq-length 8192 --layout
# tp=8,pp=8,vpp=1,mbs=1,recompute=selective,dopt=1) estimates 85.7 GiB per GPU for stage 1: it fits an
# H200, not an 80 GB H100 (71.6 GiB usable); on H100s take one of the planner's top layouts instead.
# The reasoning the layout was first chosen by:
# - 178.6B parameters. TP=8 keeps tensor parallelism inside a node's NVLink domain; PP=8 puts 13 of
#   the 104 layers on each stage. One replica is 64 GPUs holding 2.8B parameters each: 5.6 GB of
#   bf16 weights + 11.2 GB of fp32 gradients + 12 bytes/parameter of Adam state and master weights
#   sharded over DP by the distributed optimizer (4.2 GB at DP=8), leaving ~50 GB of an 80 GB card
#   for activations of 8k-token micro-batches with sequence parallelism.
# - Stage 1 (8k context): 64 nodes = 512 GPUs = DP 8; 1024 sequences x 8192 = 8.4M tokens per step.
# - Stage 2 (32k context, RoPE scaled 4x: conf/stage/stage2_32k.yaml): activations per sequence grow
#   4x; context parallelism CP=2 splits each sequence over 2 GPUs: 128 GPUs per replica, DP 4 on the
#   same 64 nodes; 256 sequences x 32768 = 8.4M tokens per step, as in stage 1.
# - Stage 3 (high-quality blend, 32k): stage 2's layout, a WSD schedule decaying to zero.
# - Stage 4 (204,800-token context, RoPE scaled 25x: conf/stage/stage4_200k.yaml): CP=8 and full
#   recompute, one replica of 512 GPUs; 40 sequences x 204800 = 8.2M tokens per step (the planner,
#   --gpu h200 --nodes 64 --seq-length 204800 --global-batch-tokens 8192000 --layout
#   tp=8,pp=8,cp=8,mbs=1,recompute=full: 31.1 GiB per GPU). On 1024 H100s: experiment=sota_175b_32k
#   and experiment=sota_175b_200k hold the planner's first layouts for stages 2 and 4.
# Iteration counts are placeholders for the recipe's token budgets; edit them here.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${ROOT:?"set ROOT to a shared directory for the three stages' run directories"}
NODES=${NODES:-64}
COMMON=(model=sota_175b parallel.tp=8 parallel.pp=8 parallel.sp=true parallel.distributed_optimizer=true
        train.micro_batch_size=1 train.recompute=selective "$@")

submit() {  # submit <stage name> <dependency or ""> <overrides...>
  local name=$1 dependency=$2
  shift 2
  sbatch --parsable --nodes="$NODES" --job-name="sota175b-$name" ${dependency:+--dependency=afterok:$dependency} \
    --export="ALL,RUN_DIR=$ROOT/$name" examples/slurm/pretrain.sbatch "$@"
}

STAGE1=$(submit stage1 "" "${COMMON[@]}" stage=stage1_8k train.global_batch_size=1024 train.iters=500000)
STAGE2=$(submit stage2 "$STAGE1" "${COMMON[@]}" stage=stage2_32k parallel.cp=2 train.global_batch_size=256 \
  train.iters=20000 "checkpoint.init_from=$ROOT/stage1/checkpoints")
STAGE3=$(submit stage3 "$STAGE2" "${COMMON[@]}" stage=stage3_hq parallel.cp=2 train.global_batch_size=256 \
  train.iters=10000 scheduler=wsd "checkpoint.init_from=$ROOT/stage2/checkpoints")
STAGE4=$(submit stage4 "$STAGE3" "${COMMON[@]}" stage=stage4_200k parallel.cp=8 train.recompute=full \
  train.global_batch_size=40 train.iters=2500 "checkpoint.init_from=$ROOT/stage3/checkpoints")
echo "stage 1: job $STAGE1 -> stage 2: job $STAGE2 -> stage 3: job $STAGE3 -> stage 4: job $STAGE4 (run directories under $ROOT)"
