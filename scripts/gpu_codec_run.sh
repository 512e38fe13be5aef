#!/usr/bin/env bash
# A short codec-training chunk on the lent GPU, from checkpoints/elic-small; prepared by scripts/gpu_codec_prepare.sh.
#   bash scripts/gpu_codec_run.sh [MINUTES=8] [extra train-codec flags...]
# Writes to $OUT (what the device tool brings back): log.txt and run.tgz.part-* (best/ export, logs), each < 16 MiB.
# Back here: cat FILES_AT/run.tgz.part-* | tar xzf - -C runs/elic-small-gpu   (then bench it; docs/training.md)
set -uo pipefail
MINUTES=${1:-8}; shift || true
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
RUN=${RUN:-/tmp/codec-run}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ! "$PY" -c "import cotam_llava._compressai" 2>/dev/null; then  # our shim: compressai without torchvision too
    [ -d .whl ] || { echo "no compressai and no .whl/: run scripts/gpu_codec_prepare.sh here and carry .whl" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site:$PWD
fi
[ -d .gpu-data/train ] || { echo "no .gpu-data/train: run scripts/gpu_codec_prepare.sh here and carry .gpu-data" >&2; exit 2; }
"$PY" -c "import torch, cotam_llava.training.codec_trainer; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" || exit 2
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
"$PY" -m cotam_llava train-codec --output_dir "$RUN" --init_checkpoint checkpoints/elic-small --data_dirs .gpu-data/train \
    --crop_size 256 --batch_size 16 --learning_rate 5e-5 --lr_ramp_steps 500 --max_steps 200000 --save_every 1000 --val_every 2000 \
    --val_qualities 0 2 4 6 9 --log_every 100 --max_minutes "$MINUTES" --threads 8 "$@" 2>&1 \
    | tr '\r' '\n' | grep --line-buffered -v '^train-codec: ' | tee "$OUT/log.txt"
code=${PIPESTATUS[0]}
tail -3 "$RUN/train_log.csv" 2>/dev/null; cat "$RUN/val_bdrate.csv" 2>/dev/null
( cd "$RUN" && tar czf - best train_log.csv val_log.csv val_bdrate.csv training_args.json ) | split -b 15M - "$OUT/run.tgz.part-"
ls -la "$OUT"
exit "$code"
