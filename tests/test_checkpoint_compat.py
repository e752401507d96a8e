"""Checkpoints written by xpnet 0.1.0 keep loading, to the same numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from xpnet.checkpoint import load_checkpoint, read_checkpoint
from xpnet.cli import main
from xpnet.datasets import load_dataset, load_npz
from xpnet.preprocessing import transform

DATA = Path(__file__).parent / "data"


def test_a_0_1_0_adam_checkpoint_predicts_as_it_did():
    model, meta = load_checkpoint(DATA / "ckpt-0.1.0-adam.npz", "cpu")
    assert meta["xpnet_version"] == "0.1.0" and model.epochs_trained == 2
    data = load_npz(DATA / "tiny-dataset.npz")
    arrays = meta["preprocessing_arrays"]
    x = transform(
        data.x_test,
        scale=meta["preprocessing"]["scale"],
        mean=arrays["mean"],
        std=arrays["std"],
    )
    expected = np.load(DATA / "ckpt-0.1.0-expected.npz")["adam_test_proba"]
    np.testing.assert_allclose(model.predict_proba(x), expected, rtol=1e-6)


def test_a_0_1_0_sgd_checkpoint_predicts_as_it_did():
    model, _ = load_checkpoint(DATA / "ckpt-0.1.0-sgd.npz", "cpu")
    images = load_dataset("mnist-sample").x_test[:50]
    x = transform(images, deskew=True, scale=255.0, image_shape=(28, 28))
    expected = np.load(DATA / "ckpt-0.1.0-expected.npz")["sgd_first50_proba"]
    np.testing.assert_allclose(model.predict_proba(x), expected, rtol=1e-5)


def test_a_0_1_0_run_resumes_with_its_moved_dataset(tmp_path, capsys):
    ckpt = tmp_path / "old.npz"
    shutil.copy(DATA / "ckpt-0.1.0-adam.npz", ckpt)
    data = str(DATA / "tiny-dataset.npz")
    args = ["train", "--resume", str(ckpt), "--dataset", data, "--epochs", "3"]
    assert main([*args, "--quiet", "--device", "cpu"]) == 0
    assert "dataset tiny010.npz not found; using --dataset" in capsys.readouterr().err
    meta, _ = read_checkpoint(ckpt)
    assert meta["epochs_trained"] == 3 and meta["optimizer"]["iterations"] == 3
    assert meta["train_options"]["dataset"] == str(Path(data).resolve())
