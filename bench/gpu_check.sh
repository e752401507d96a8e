#!/usr/bin/env bash
# The first-GPU-run command: run once on a machine with a CUDA GPU to prove the
# CUDA path, and commit what it writes under bench/results/gpu-check-<date>/.
#   bash bench/gpu_check.sh            # from the repository root
# Needs no network: xpnet and array-api-compat installed (or their wheels in
# .whl/, see README "GPU"), CuPy (xpnet[cuda12] or [cuda13]), PyTorch optional.
# Every step runs even if an earlier one fails; the exit code says if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
stamp=$(date -u +%Y-%m-%d)
out="bench/results/gpu-check-$stamp"
n=1
while [ -e "$out" ]; do n=$((n + 1)); out="bench/results/gpu-check-$stamp-$n"; done
mkdir -p "$out"
failed=0
step() {  # step NAME COMMAND...: run, log to $out/NAME.log, remember failures
  local name=$1; shift
  echo "== $name: $*"
  if "$@" >"$out/$name.log" 2>&1; then echo "   ok"; else echo "   FAILED (see $out/$name.log)"; failed=1; fi
  tail -n 3 "$out/$name.log" | sed 's/^/   /'
}
step info python -m xpnet info --json
step nvidia-smi nvidia-smi
# The GPU-parametrised tests (the cupy backend of every backend test, bench smoke).
step gpu-tests python -m pytest -q -p no:cacheprovider -k "cupy or cuda" tests bench
# CuPy vs NumPy after one epoch (float64 to 1e-10, float32 to 1e-4), every GPU;
# torch steps under torch.cuda.set_sync_debug_mode("error").
step agreement python bench/gpu_check.py --out "$out/agreement.json"
step train python -m xpnet train --device cuda --dataset mnist-sample --epochs 3 --json
step bench python -m xpnet bench --device cuda --quick --out "$out"
echo "results in $out (commit them)"
exit "$failed"
