"""scikit-learn is optional: ``import xpnet`` never imports it, and importing
``xpnet.sklearn`` without it says how to install it, in one line."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def test_import_xpnet_and_training_do_not_import_sklearn():
    code = (
        "import sys, numpy as np, xpnet\n"
        "m = xpnet.mlp([3, 4, 2], device='cpu')\n"
        "m.fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]))\n"
        "print('sklearn' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_xpnet_sklearn_without_sklearn_says_pip_install_in_one_line(monkeypatch):
    # A None entry makes `import sklearn` raise ImportError, as if missing.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    for name in [m for m in sys.modules if m.startswith("xpnet.sklearn")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as err:
        importlib.import_module("xpnet.sklearn")
    message = str(err.value)
    assert "pip install 'xpnet[sklearn]'" in message and "\n" not in message


def test_xpnet_sklearn_with_an_old_sklearn_asks_for_an_upgrade(monkeypatch):
    import types

    old = types.ModuleType("sklearn")
    old.__version__ = "1.5.2"
    monkeypatch.setitem(sys.modules, "sklearn", old)
    for name in [m for m in sys.modules if m.startswith("xpnet.sklearn")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"needs scikit-learn >= 1.6, found 1.5.2"):
        importlib.import_module("xpnet.sklearn")
