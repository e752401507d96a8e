#!/usr/bin/env bash
# The first GPU run, in one command (README "GPU"). On the lent machine, from a
# copy of this tree that carries .whl/ and .gpu-data/ (made here beforehand by
# bench/gpu_wheels.sh):
#   bash bench/gpu_check.sh
# It builds nothing and needs no network: it installs the carried wheels with
# --no-index into a folder of its own, then runs, each step under its own
# timeout and all of it into one log:
#   install, info, agreement (bench/gpu_check.py: CuPy and torch-CUDA vs NumPy
#   and each other, no host sync in a CuPy step, the CUDA-graph step vs eager),
#   bench (seed and mlp512 x batch 32..8192 on 60,000 rows vs PyTorch eager and
#   CUDA-graph on the same GPU), gpu-tests (real CuPy only), summary.
# Files go to $OUT (the device tool's folder that comes back; default
# ./gpu-check-out), at most 8: gpu_check.log, summary.md, agreement.json and
# the bench's <device>-<date>.json/.md. Each step writes its own files as it
# goes, so a step that fails or runs out of time leaves the others' results.
# The exit code is 0 only if every step passed.
#
# Knobs (environment): GPU_CHECK_BUDGET_S (whole run, default 450 s: leaves a
# 540 s device timeout margin), GPU_CHECK_PYTHON (default python3),
# GPU_CHECK_BENCH_ARGS (the sweep's models/sizes/rows; they come after the
# defaults, so they win), GPU_CHECK_NETS (the agreement's nets, default
# small,seed,mlp512), GPU_CHECK_STEPS (a space-separated subset of the steps
# above, in order; install always runs).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD
python=${GPU_CHECK_PYTHON:-python3}
out=${OUT:-$root/gpu-check-out}
budget=${GPU_CHECK_BUDGET_S:-450}
steps=${GPU_CHECK_STEPS:-"info agreement bench gpu-tests"}
bench_args=${GPU_CHECK_BENCH_ARGS:-"--models seed,mlp512 \
--batch-sizes 32,64,128,256,512,1024,2048,4096,8192 --rows 60000"}
nets=${GPU_CHECK_NETS:-small,seed,mlp512}
mkdir -p "$out" || exit 2
log="$out/gpu_check.log"
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 2
target="$work/site"
started=$SECONDS
declare -a results=()

# name: max seconds, min seconds. A step gets at most its max and no more than
# the budget leaves after the later steps' minimums; where that is below its
# own minimum, it takes that minimum from the later steps (earlier steps
# matter more); a step that cannot have its minimum is skipped.
declare -A max_s=([install]=120 [info]=60 [agreement]=150 [bench]=270 [gpu-tests]=150)
declare -A min_s=([install]=30 [info]=10 [agreement]=30 [bench]=40 [gpu-tests]=30)
summary_reserve=15

later_minimums() {  # the minimums of the steps after $1 in $steps, + summary
  local total=$summary_reserve seen=0 s
  [ "$1" = install ] && seen=1  # install comes before all of $steps
  for s in $steps; do
    if [ "$seen" = 1 ]; then total=$((total + min_s[$s])); fi
    if [ "$s" = "$1" ]; then seen=1; fi
  done
  echo "$total"
}

write_summary() {  # summary.md now, so that a later kill still leaves it
  {
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "| step | result | seconds | timeout |"
    echo "|---|---|---:|---:|"
    printf '%s\n' "${results[@]}"
  } >"$out/summary.md.tmp" && mv -f "$out/summary.md.tmp" "$out/summary.md"
}

failed=0
step() {  # step NAME COMMAND...: run under the budget's timeout, log, record
  local name=$1; shift
  local left=$((budget - (SECONDS - started) - $(later_minimums "$name")))
  local limit=${max_s[$name]}
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt "${min_s[$name]}" ]; then
    # Too little for this step and the later ones' minimums: this step
    # comes first, it may take its minimum from them (not the summary's).
    limit=$((budget - (SECONDS - started) - summary_reserve))
    [ "$limit" -gt "${min_s[$name]}" ] && limit=${min_s[$name]}
  fi
  echo
  echo "== $name (timeout ${limit}s; $((budget - (SECONDS - started)))s of the budget left)"
  if [ "$limit" -lt "${min_s[$name]}" ]; then
    echo "== $name: SKIPPED (the budget leaves ${limit}s, it needs ${min_s[$name]}s)"
    results+=("| $name | SKIPPED (budget) | 0 | $limit |")
    failed=1
    write_summary
    return 1
  fi
  local t0=$SECONDS status
  # bash -c: the steps are the functions below (exported); timeout signals
  # the whole process group (bench workers too)
  timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@"
  status=$?
  local took=$((SECONDS - t0)) verdict
  case $status in
    0) verdict=ok ;;
    124 | 137) verdict="TIMED OUT after ${limit}s" ;;
    *) verdict="FAILED (exit $status)" ;;
  esac
  [ "$status" -eq 0 ] || failed=1
  echo "== $name: $verdict (${took}s)"
  results+=("| $name | $verdict | $took | $limit |")
  write_summary
  return "$status"
}

install() {  # the carried wheels into $target, without pip's network
  if ! ls "$root"/.whl/xpnet-*.whl >/dev/null 2>&1; then
    echo "no xpnet wheel in $root/.whl: run bash bench/gpu_wheels.sh here first, carry .whl"
    return 2
  fi
  # The machine's own packages stay theirs (torch needs its typing-extensions,
  # ...): only xpnet's own stack and what the machine lacks come from the wheels.
  local wheels
  mapfile -t wheels < <("$python" - "$root"/.whl/*.whl <<'EOF'
import sys
from importlib import metadata
from pathlib import Path

for wheel in sys.argv[1:]:
    name = Path(wheel).name.split("-")[0]
    try:
        ours = name in ("xpnet", "array_api_compat", "array_api_strict")
        found = not ours and metadata.version(name)
    except metadata.PackageNotFoundError:
        found = False
    if found:
        print(f"{name}: the machine's own {found}", file=sys.stderr)
    else:
        print(wheel)
EOF
)
  if "$python" -m pip --version >/dev/null 2>&1; then
    # --no-deps: NumPy, CuPy, torch are the machine's own; the folder holds
    # every other wheel needed.
    "$python" -m pip install --quiet --no-index --no-deps --no-compile \
      --disable-pip-version-check --target "$target" "${wheels[@]}" || return
  else
    echo "no pip for $python: unpacking the (pure-Python) wheels instead"
    "$python" -c 'import sys, zipfile
for w in sys.argv[2:]:
    zipfile.ZipFile(w).extractall(sys.argv[1])' "$target" "${wheels[@]}" || return
  fi
  "$python" - <<'EOF'
import importlib

# (torch is left to the later steps: importing it takes seconds)
for name in ("xpnet", "array_api_compat", "numpy", "cupy", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')} from {module.__file__}")
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {exc}")
import xpnet  # the step fails if the installed xpnet does not import
EOF
}

info() {
  "$python" -m xpnet info || return
  if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
      --format=csv || true
  fi
}

agreement() {
  "$python" bench/gpu_check.py agreement --out "$out/agreement.json" --nets "$nets"
}

bench() {
  # The CUDA-graph peers only where the agreement step found them equal to
  # eager (a capture failing here would end the whole sweep).
  local peers
  peers=torch$("$python" bench/gpu_check.py graph-peers --out "$out/agreement.json")
  # shellcheck disable=SC2086  # bench_args is a list of options
  # (GPU_CHECK_BENCH_ARGS after the defaults: its options win)
  "$python" -m xpnet bench --device cuda:0 --repeats 3 --warmup 1 \
    --max-retries 1 --quiet-wait 2 --no-plot $bench_args --peers "$peers" \
    --out "$out" --note "bench/gpu_check.sh"
}

gpu_tests() {
  "$python" bench/gpu_check.py gpu-tests --junit "$work/gpu-tests.xml"
}

export -f install info agreement bench gpu_tests
export root python out target work bench_args nets

main() {
  local s
  for s in $steps; do
    if [ -z "${max_s[$s]:-}" ] || [ "$s" = install ]; then
      echo "gpu_check: unknown step '$s' in GPU_CHECK_STEPS: use info agreement bench gpu-tests"
      return 2
    fi
  done
  echo "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${budget}s, results in $out"
  export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
  export XPNET_DEBUG=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
  export XPNET_TEST_SHARED="$root/.gpu-data"
  if ! step install install; then
    echo "gpu_check: nothing else can run without xpnet installed"
  else
    for s in $steps; do
      step "$s" "${s/-/_}"
    done
  fi
  echo
  echo "== summary"
  timeout -k 5 "$summary_reserve" "$python" bench/gpu_check.py summary --out "$out" \
    --failed "$failed" --steps "$out/summary.md" --planned "$steps" || cat "$out/summary.md"
  return "$failed"
}

main 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
rm -rf "$work"
exit "$status"
