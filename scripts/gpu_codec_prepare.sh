#!/usr/bin/env bash
# Prepare a codec-training chunk for a lent GPU (the `device` tool; docs/training.md, "On a lent GPU").
# Run here, in the repository root, once per checkout: it fills two git-ignored folders that the run carries.
#   .whl/       compressai 1.2.8 and pytorch-msssim wheels for the GPU machine's Python 3.12 (its image has torch,
#               torchvision, transformers, accelerate, safetensors, but not these)
#   .gpu-data/  the training photos of ../shared/data/train, long side ≤ 768, WebP q88 (≈ 9 MB: what travels is
#               capped at 64 MiB, the tracked tree is ≈ 52 MB and ../shared does not travel)
# Then: device run, carry [".whl", ".gpu-data"], command "bash scripts/gpu_codec_run.sh 8", timeout_s 600.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SRC=${1:-../shared/data/train}
for d in /.whl/ /.gpu-data/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "$d" >> .git/info/exclude; }; done
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --index-url https://pypi.org/simple --python-version 3.12 \
    --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 -d .whl compressai==1.2.8 pytorch-msssim==1.0.0
rm -rf .gpu-data && mkdir -p .gpu-data/train
"$PY" - "$SRC" <<'PYEOF'
import sys
from pathlib import Path

from PIL import Image

from cotam_llava.training.data import photo_files

src = Path(sys.argv[1])
total = 0
for path in photo_files([src]):
    out = Path(".gpu-data/train") / path.relative_to(src).with_suffix(".webp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((768, 768), Image.Resampling.LANCZOS)
        im.save(out, "WEBP", quality=88, method=6)
    total += out.stat().st_size
print(f"{len(list(Path('.gpu-data/train').rglob('*.webp')))} photos, {total / 2**20:.1f} MiB in .gpu-data/train")
PYEOF
du -sh .whl .gpu-data
# what a run sends: the tracked files present in the checkout, untracked files git does not ignore, and the carry
travel=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null; du -sb .whl .gpu-data | cut -f1; } | awk '{s+=$1} END {print s}')
echo "a run sends $((travel / 1048576)) MiB (the device tool's limit: 64 MiB)"
if [ "$travel" -gt $((62 * 1048576)) ]; then
    echo "over the limit: move what the run does not need out of the checkout for the run (e.g. mv checkpoints/elic-small-next /tmp/), then back" >&2
    exit 1
fi
