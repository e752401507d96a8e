"""Issue 16 item 28, the smaller ones: a loss used before ``build()``,
complex inputs, a Backend with a contradicting ``backend=``, and hints that
pointed the wrong way. (The version is tests/test_release.py; ``--hidden 0``
said once per rank is tests/test_mpi_startup.py.)"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import xpnet
from xpnet.cli import main
from xpnet.errors import DeviceError, XpnetError


@pytest.mark.parametrize("name", ["numpy", "array_api_strict_device1"])
def test_item28_a_loss_called_before_build_builds_itself(name):
    from conftest import make_backend

    backend = make_backend(name)
    xp = backend.xp
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    labels = np.array([0, 2])
    out = xp.asarray(logits, device=backend.device)
    y = xp.asarray(labels, device=backend.device)
    value = xpnet.CrossEntropy()(out, y)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.log(p[[0, 1], labels]).mean()
    assert float(value) == pytest.approx(expected, rel=1e-12)
    assert float(xpnet.MeanSquaredError()(out, out)) == 0.0
    with pytest.raises(XpnetError, match="float32 or float64 outputs"):
        xpnet.CrossEntropy()(np.array([[1, 2]]), np.array([0]))


def test_item28_complex_inputs_are_refused_not_cast():
    model = xpnet.mlp([4, 3, 2], seed=0, device="cpu")
    X = np.ones((6, 4)) + 1j
    y = np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(XpnetError, match=r"X holds complex numbers .*X\.real"):
        model.fit(X, y, 1, 2)
    with pytest.raises(XpnetError, match="y holds complex numbers"):
        model.fit(X.real, y + 0j, 1, 2)
    with pytest.raises(XpnetError, match="holds complex numbers"):
        model.predict(X)


def test_item28_a_backend_with_a_contradicting_backend_name_is_refused():
    numpy_cpu = xpnet.resolve("cpu", "numpy")
    with pytest.raises(DeviceError, match="backend='torch' contradicts it"):
        xpnet.Sequential([xpnet.Dense(4, 2)], device=numpy_cpu, backend="torch")
    # The same name, or none, is the Backend itself.
    model = xpnet.Sequential([xpnet.Dense(4, 2)], device=numpy_cpu, backend="numpy")
    assert model.backend is numpy_cpu


def test_item28_standardize_is_not_offered_to_who_asked_for_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "wide.npz"
    np.savez(
        data,
        x_train=rng.uniform(0, 1000, (30, 8)),
        y_train=np.arange(30) % 3,
        x_test=rng.uniform(0, 1000, (9, 8)),
        y_test=np.arange(9) % 3,
    )
    args = ["train", "--dataset", str(data), "--scale", "255", "--quiet"]
    assert main([*args, "--standardize"]) == 2
    line = capsys.readouterr().err
    assert "scale by the largest possible value (at least 9" in line
    assert "standardize" not in line
    assert main(args) == 2  # without it, standardising is still a way out
    assert "or standardize instead of scaling" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.npz"
    args = ["--dataset", "mnist-sample", "--hidden", "4", "--epochs", "1"]
    assert main(["train", *args, "--quiet", "--save", str(path)]) == 0
    return path


def test_item28_predict_with_swapped_arguments_says_the_order(
    tmp_path, checkpoint, capsys
):
    image = tmp_path / "digit.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert main(["predict", str(image), str(checkpoint)]) == 2
    line = capsys.readouterr().err.strip()
    assert "is an input, not a checkpoint: the checkpoint comes first" in line
    assert f"(xpnet predict {checkpoint} {image})" in line
    assert "corrupt" not in line


def test_item28_a_stray_json_copy_does_not_advise_resume(tmp_path, capsys):
    (tmp_path / "new.npz.json").write_text("{}")
    save = str(tmp_path / "new.npz")
    args = ["train", "--dataset", "mnist-sample", "--epochs", "1", "--save", save]
    assert main(args) == 2
    line = capsys.readouterr().err.strip()
    assert "already exists without" in line and "--resume" not in line


def test_item28_plot_without_o_does_not_blame_o(tmp_path, checkpoint, capsys):
    pytest.importorskip("matplotlib")
    model = tmp_path / "x.npz"
    shutil.copy(checkpoint, model)
    (tmp_path / "x.png").write_bytes(b"someone else's picture")
    assert main(["plot", str(model)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("xpnet: error: the default picture (-o names another)")
    assert "-o '" not in line
    assert (tmp_path / "x.png").read_bytes() == b"someone else's picture"
