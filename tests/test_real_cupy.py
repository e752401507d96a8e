"""What a user with the real CuPy wheel but no usable GPU sees.

`.ci/run` installs the real ``cupy-cuda12x`` wheel (no GPU, no driver, no
toolkit) in a step of its own after the main test run, and runs this file
there; elsewhere it is skipped. Every command must work or say why not in one
line: ``--device auto`` falls back to the CPU with CuPy's true reason,
``--device cuda`` and ``--backend cupy`` exit 2 with it, ``xpnet info``
reports it, nothing crashes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _real_cupy_without_gpu() -> str | None:
    """Why these tests cannot run here, or None."""
    try:
        import cupy
    except Exception as exc:
        return (
            f"the real CuPy is not installed here ({type(exc).__name__}); "
            ".ci/run installs it in a step of its own"
        )
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return None
    return "a CUDA GPU is usable here" if count else None


pytestmark = pytest.mark.skipif(
    _real_cupy_without_gpu() is not None, reason=str(_real_cupy_without_gpu())
)

TRAIN = ("train", "--dataset", "mnist-sample", "--hidden", "8", "--epochs", "1")


def xpnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xpnet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _reason() -> str:
    import cupy

    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return type(exc).__name__
    return "CuPy found no GPU"


def test_auto_falls_back_to_the_cpu_with_the_true_reason():
    # The notice is for those who typed auto (the default says it in line 1).
    proc = xpnet(*TRAIN, "--device", "auto", "--quiet")
    assert proc.returncode == 0, proc.stderr
    notice = [ln for ln in proc.stderr.splitlines() if "device auto" in ln]
    assert len(notice) == 1 and _reason() in notice[0]
    assert "running on the CPU with numpy" in notice[0]
    assert "CuPy is not installed" not in proc.stderr
    assert proc.stdout.startswith("done: 1 epoch")


@pytest.mark.parametrize(
    "options,start",
    [
        (("--device", "cuda"), "xpnet: error: device 'cuda:0' is not usable"),
        (("--backend", "cupy"), "xpnet: error: backend 'cupy' cannot run here"),
    ],
)
def test_an_explicit_gpu_request_exits_2_with_the_reason(options, start):
    proc = xpnet(*TRAIN, *options)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("xpnet: error")]
    assert len(errors) == 1 and errors[0].startswith(start)
    assert _reason() in errors[0]
    assert "Traceback" not in proc.stderr


def test_info_reports_cupy_and_why_no_gpu():
    proc = xpnet("info", "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout.splitlines()[-1])
    import cupy

    assert facts["backends"]["cupy"] == cupy.__version__
    assert facts["auto_device"]["backend"] == "numpy"
    assert len(facts["gpus"]) == 1 and _reason() in facts["gpus"][0]["error"]
    human = xpnet("info")
    assert human.returncode == 0 and _reason() in human.stdout


def test_the_library_says_why_too():
    import xpnet as library

    chosen = library.resolve("auto")
    assert chosen.name == "numpy" and _reason() in chosen.notice
    with pytest.raises(library.DeviceError, match="not usable"):
        library.resolve("cuda:1")
