#!/bin/bash
# Tokenizes many input shards in parallel on SLURM, then merges them: one array task per line of
# INPUT_LIST (preprocess.sbatch), then a merge job that starts only if every array task succeeded.
#
#   examples/slurm/submit_preprocess.sh INPUT_LIST OUTPUT_PREFIX [preprocess_data.py flags...]
#   examples/slurm/submit_preprocess.sh inputs.txt /data/web_text_document \
#       --tokenizer-type SentencePieceTokenizer --tokenizer-model tok.model --append-eod
#
# Shards go to OUTPUT_PREFIX.shards/; extra sbatch options via SBATCH_ARRAY_OPTIONS / SBATCH_MERGE_OPTIONS.
# Prints the two job ids ("array merge").
set -euo pipefail
cd "$(dirname "$0")/../.."
INPUT_LIST=$(realpath "$1") OUTPUT_PREFIX=$(realpath -m "$2")
shift 2
COUNT=$(grep -c . "$INPUT_LIST" || true)
if [[ "$COUNT" -lt 1 ]]; then
  echo "error: $INPUT_LIST lists no input files (expected one path per line)" >&2
  exit 2
fi
SHARD_DIR=$OUTPUT_PREFIX.shards
# shellcheck disable=SC2086  # the option variables are word lists on purpose
ARRAY=$(sbatch --parsable ${SBATCH_ARRAY_OPTIONS:-} --array="0-$((COUNT - 1))" \
  examples/slurm/preprocess.sbatch "$INPUT_LIST" "$SHARD_DIR" "$@")
# shellcheck disable=SC2086
MERGE=$(sbatch --parsable ${SBATCH_MERGE_OPTIONS:-} --dependency="afterok:$ARRAY" --kill-on-invalid-dep=yes \
  examples/slurm/merge.sbatch "$SHARD_DIR" "$OUTPUT_PREFIX")
echo "$ARRAY $MERGE"
