"""Issue 16 item 24: inputs that exited 1 (an "unexpected error") or said
the wrong thing now exit 2 with one line naming the real problem. Each case
goes through the real command line, :func:`xpnet.cli.main`."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import struct

import numpy as np
import pytest

from xpnet.checkpoint import read_checkpoint
from xpnet.cli import main
from xpnet.datasets import DatasetError, load_npz
from xpnet.errors import XpnetError

QUICK = ["--epochs", "1", "--hidden", "4", "--quiet", "--blas-threads", "1"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small checkpoint trained on a 3-class, 784-feature dataset."""
    folder = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    data = folder / "three.npz"
    np.savez(
        data,
        x_train=rng.integers(0, 256, (60, 784), dtype=np.uint8),
        y_train=np.arange(60) % 3,
        x_test=rng.integers(0, 256, (30, 784), dtype=np.uint8),
        y_test=np.arange(30) % 3,
    )
    path = folder / "three-classes.npz"
    assert main(["train", "--dataset", str(data), *QUICK, "--save", str(path)]) == 0
    return path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unexpected error" not in err, err
    assert err.startswith("xpnet: error: "), err
    return err


def test_item24_an_empty_npy_to_predict(tmp_path, model, capsys):
    empty = tmp_path / "none.npy"
    np.save(empty, np.zeros((0, 784), np.float32))
    assert main(["predict", str(model), str(empty)]) == 2
    assert "holds no samples (an array of shape (0, 784))" in _one_line(capsys)


def test_item24_a_dataset_label_beyond_the_models_classes(model, capsys):
    # mnist-sample's test image 7 is a 9; this model knows classes 0-2.
    assert main(["predict", str(model), "mnist-sample:7"]) == 2
    line = _one_line(capsys)
    assert "'mnist-sample:7' is labelled 9, but the model knows 3 classes" in line


def test_item24_idx_with_65_dimensions(tmp_path, capsys):
    idx = tmp_path / "deep.idx"
    idx.write_bytes(bytes([0, 0, 8, 65]) + struct.pack(">65I", *[1] * 65) + b"\1")
    assert main(["train", "--dataset", f"{idx},{idx}", *QUICK]) == 2
    assert "IDX header declares 65 dimensions; at most 32" in _one_line(capsys)


def test_item24_a_255_character_save(tmp_path, capsys):
    save = tmp_path / ("a" * 251 + ".npz")
    args = ["train", "--dataset", "mnist-sample", *QUICK]
    assert main([*args, "--save", str(save)]) == 2
    line = _one_line(capsys)
    assert "is 255 bytes long; at most 226 fit" in line
    assert not list(tmp_path.iterdir())  # nothing written
    # The longest name that fits trains and saves (lock, .json, temp files).
    longest = tmp_path / ("b" * 222 + ".npz")
    assert main([*args, "--save", str(longest)]) == 0
    assert read_checkpoint(longest)[0]["epochs_trained"] == 1


def test_item24_a_self_symlink_dataset_and_checkpoint(tmp_path, capsys):
    loop = tmp_path / "loop.npz"
    loop.symlink_to(loop.name)
    for args in (
        ["train", "--dataset", str(loop), *QUICK],
        ["train", "--dataset", str(loop), *QUICK, "--save", str(tmp_path / "s.npz")],
        ["evaluate", str(loop)],
        ["train", "--resume", str(loop), "--epochs", "2"],
    ):
        assert main(args) == 2, args
        assert "symbolic link" in _one_line(capsys)  # a loop, in either words


@pytest.mark.parametrize("special", ["fifo", "/dev/null"])
def test_item24_resuming_from_a_fifo_or_dev_null(tmp_path, capsys, special):
    if special == "fifo":
        path = tmp_path / "pipe.npz"
        os.mkfifo(path)
        kind = "is a FIFO (named pipe), not a file"
    else:
        path, kind = special, "is a character device, not a file"
    for args in (["train", "--resume", str(path), "--epochs", "2"], ["evaluate", path]):
        assert main([str(a) for a in args]) == 2
        line = _one_line(capsys)
        assert "does not exist" not in line
        assert kind in line or "must end in .npz" in line


def test_item24_export_onto_a_directory(tmp_path, model, capsys):
    pytest.importorskip("onnx")
    (tmp_path / "out.onnx").mkdir()
    assert main(["export", str(model), str(tmp_path / "out.onnx")]) == 2
    line = _one_line(capsys)
    assert "is a directory" in line
    assert "--overwrite" not in line


@contextlib.contextmanager
def _no_file_descriptors_left():
    """Every descriptor this process may open is taken (a lowered limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
    taken = []
    try:
        while True:
            try:
                taken.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_item24_too_many_open_files_is_not_a_bad_file(model):
    data = model.parent / "three.npz"
    with _no_file_descriptors_left():
        with pytest.raises(DatasetError) as dataset_error:
            load_npz(data)
        with pytest.raises(XpnetError) as checkpoint_error:
            read_checkpoint(model)
    for info in (dataset_error, checkpoint_error):
        message = str(info.value)
        assert "Too many open files: raise the limit on open files" in message
        for wrong in ("corrupt", "not a zip", "not a readable", "save it again"):
            assert wrong not in message
    assert load_npz(data).num_classes == 3  # the file was fine all along
