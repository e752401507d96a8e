"""``xpnet info``: backends, devices, GPUs, versions."""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

from .. import __version__
from ..backend import available_backends, gpu_facts, resolve
from .common import device_facts, print_json


def run(args: argparse.Namespace) -> int:
    import array_api_compat

    from ..datasets import default_data_dir

    auto = resolve("auto")
    facts: dict[str, Any] = {
        "xpnet": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "array_api_compat": array_api_compat.__version__,
        "backends": available_backends(),
        "gpus": gpu_facts(),
        "auto_device": device_facts(auto),
        "data_dir": str(default_data_dir()),
    }
    if args.json:
        print_json(facts)
        return 0
    print(
        f"xpnet {facts['xpnet']} on Python {facts['python']} "
        f"({facts['platform']}, {facts['cpu_count']} CPUs)"
    )
    print(f"array-api-compat {facts['array_api_compat']}")
    for name, version in facts["backends"].items():
        print(f"  {name:<17} {version}")
    if facts["gpus"]:
        for gpu in facts["gpus"]:
            print("  GPU " + ", ".join(f"{k}={v}" for k, v in gpu.items()))
    else:
        print(
            "  GPU: none usable (CuPy missing or no CUDA device); "
            "pip install 'xpnet[cuda12]' on a CUDA machine"
        )
    print(f"--device auto -> {auto.describe()}")
    print(f"dataset cache: {facts['data_dir']}")
    return 0
