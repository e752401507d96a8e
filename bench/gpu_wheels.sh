#!/usr/bin/env bash
# Run HERE, before a GPU is lent: everything bench/gpu_check.sh installs on the
# device, which has no network and no array-api-compat (see README "GPU").
#   bash bench/gpu_wheels.sh          # from any directory; needs pip's index
# Writes (both git-ignored, both carried to the device by the run command):
#   .whl/       xpnet's own wheel and the pure-Python wheels it needs there
#               (array-api-compat, tqdm, threadpoolctl; pytest and its
#               dependencies and array-api-strict for the GPU tests), pinned to
#               the versions installed here when they are, else the newest;
#   .gpu-data/  the real MNIST files the GPU tests read (../shared does not
#               travel), when ../shared/data/mnist is there.
# NumPy, CuPy and PyTorch are not included: the device has its own.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
command -v "$python" >/dev/null || python=python

rm -rf .whl.tmp
mkdir -p .whl.tmp
"$python" -m pip wheel --quiet --no-deps -w .whl.tmp .
# Pure-Python wheels only (py3-none-any), without their dependencies (which
# would pull NumPy builds for this machine): the list is complete on its own.
# exceptiongroup, tomli and typing-extensions: pytest's on Python 3.10.
packages=(array-api-compat tqdm threadpoolctl array-api-strict pytest iniconfig
  packaging pluggy pygments exceptiongroup tomli typing-extensions)
pinned=$("$python" - "${packages[@]}" <<'EOF'
import sys
from importlib import metadata

for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
EOF
)
# shellcheck disable=SC2086  # one requirement per word
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform any --implementation py --python-version 3.10 -d .whl.tmp $pinned
rm -rf .whl
mv .whl.tmp .whl

mnist=../shared/data/mnist
if [ -d "$mnist" ]; then
  rm -rf .gpu-data
  mkdir -p .gpu-data/data/mnist
  cp "$mnist"/train-5k-*-idx*-ubyte.gz "$mnist"/t10k-*-idx*-ubyte.gz .gpu-data/data/mnist/
else
  echo "gpu_wheels: $mnist not found; the GPU tests that read MNIST will skip"
fi
echo "gpu_wheels: $(find .whl -type f -name '*.whl' | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1))"
if [ -d .gpu-data ]; then echo "gpu_wheels: .gpu-data/ $(du -sh .gpu-data | cut -f1)"; fi
echo "device command: bash bench/gpu_check.sh   (carry .whl and .gpu-data, timeout_s 540)"
