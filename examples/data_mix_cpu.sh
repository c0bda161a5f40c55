#!/usr/bin/env bash
# A blend of three named sources, end to end on CPU: the standard library's sources are split
# into three corpora (every third file), each written as its own Megatron shard, and the tiny
# model trains on them mixed 50/30/20 through `data.sources`. The run prints the realised
# per-source sample counts at start and writes data_mix.json / data_mix.png beside config.yaml.
# Everything lands in ${DATA_MIX_DIR:-.data_mix}/. Takes about a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DATA_MIX_DIR:-.data_mix}
ITERS=${DATA_MIX_ITERS:-20}
mkdir -p "$OUT"

echo "== 1/3 corpus and tokenizer"
python tools/build_stdlib_corpus.py --output "$OUT/stdlib.jsonl" --overwrite --max-files 600
python tools/train_tokenizer.py --input "$OUT/stdlib.jsonl" --model-prefix "$OUT/tokenizer" --overwrite --vocab-size 2000
echo "== 2/3 three sources, one shard each"
for part in a b c; do
  awk -v n="$(( $(printf '%d' "'$part") - 97 ))" 'NR % 3 == n' "$OUT/stdlib.jsonl" > "$OUT/$part.jsonl"
  python tools/preprocess_data.py --input "$OUT/$part.jsonl" --output-prefix "$OUT/$part" --overwrite \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" --append-eod --workers 2
done

echo "== 3/3 train tiny on the 50/30/20 blend"
rm -rf "$OUT/run"
python -m megatron_sota.train experiment=quickstart_cpu "train.iters=$ITERS" train.eval_interval=10 \
  tokenizer=sentencepiece "tokenizer.model=$OUT/tokenizer.model" \
  "+data.sources={part_a:{weight:50,paths:[$OUT/a_text_document]},part_b:{weight:30,paths:[$OUT/b_text_document]},part_c:{weight:20,paths:[$OUT/c_text_document]}}" \
  "hydra.run.dir=$OUT/run"
echo "realised mix: $OUT/run/data_mix.json, chart: $OUT/run/data_mix.png"
