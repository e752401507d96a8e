"""Issue 16, "silent wrong answers" (items 9-16): what xpnet used to answer
wrongly with exit 0 is now refused with one line (exit 2 in the CLI), or
answered right."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from xpnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from xpnet.cli import main
from xpnet.errors import DivergenceError, XpnetError
from xpnet.model import mlp
from xpnet.optimizers import SGD


def _arrays(path: Path) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    return json.loads(arrays.pop("meta").tobytes()), arrays


def _write(path: Path, meta: dict, arrays: dict) -> Path:
    text = json.dumps(meta).encode()
    np.savez(path, meta=np.frombuffer(text, np.uint8), **arrays)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("xpnet: error: "), err
    assert "Warning" not in err
    return err


@pytest.fixture(scope="module")
def regressor(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.random((40, 4)).astype(np.float32)
    model = mlp([4, 5, 2], loss="mse", device="cpu", seed=0)
    model.fit(x, rng.normal(size=(40, 2)).astype(np.float32), epochs=1)
    extra = {"preprocessing": {"deskew": False, "scale": None, "standardize": False}}
    return save_checkpoint(tmp_path_factory.mktemp("reg") / "reg.npz", model, extra)


@pytest.mark.parametrize(
    ("task", "loss", "target_ndim", "match"),
    [
        ("regression", "CrossEntropy", 2, "always classifies"),
        ("regression", "MeanSquaredError", 1, "target_ndim is 1"),
    ],
)
def test_item14_a_crafted_task_that_the_loss_cannot_have_is_refused(
    regressor, tmp_path, capsys, task, loss, target_ndim, match
):
    meta, arrays = _arrays(regressor)
    meta["architecture"].update(task=task, target_ndim=target_ndim)
    meta["architecture"]["loss"] = {"type": loss}
    crafted = _write(tmp_path / "crafted.npz", meta, arrays)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(crafted, "cpu")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 4), np.float32))
    assert main(["predict", str(crafted), str(x)]) == 2
    assert match in _one_line_error(capsys)


# -- item 13: options that would do nothing are refused ---------------------------
IDLE_PAIRS = [
    (["--optimizer", "adam", "--momentum", "0.5"], "--momentum is an SGD setting"),
    (["--optimizer", "adamw", "--nesterov"], "--nesterov is an SGD setting"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum is an SGD setting"),
    (["--overwrite"], "--overwrite replaces an existing --save or --plot"),
    (["--data-dir", "cache"], "--data-dir is where mnist and fashion-mnist"),
    (["--blas-threads", "1", "--device", "cuda"], "--blas-threads sets the CPU"),
]


@pytest.mark.parametrize(("extra", "match"), IDLE_PAIRS)
def test_item13_train_refuses_options_that_do_nothing(tmp_path, capsys, extra, match):
    argv = ["train", "--dataset", "mnist-sample", "--epochs", "1", "--hidden", "4"]
    save = [] if "--overwrite" in extra else ["--save", str(tmp_path / "m.npz")]
    assert main([*argv, *save, *extra]) == 2
    assert match in _one_line_error(capsys)
    assert not (tmp_path / "m.npz").exists()


def test_item13_evaluate_and_predict_refuse_options_that_do_nothing(
    regressor, tmp_path, capsys
):
    assert main(["evaluate", str(regressor), "--overwrite"]) == 2
    assert "--plot is not given" in _one_line_error(capsys)
    argv = ["evaluate", str(regressor), "--dataset", "mnist-sample", "--data-dir", "c"]
    assert main(argv) == 2
    assert "--dataset mnist-sample is not read from it" in _one_line_error(capsys)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 4), np.float32))
    assert main(["predict", str(regressor), str(x), "--data-dir", str(tmp_path)]) == 2
    assert "every input is a file" in _one_line_error(capsys)


def test_item13_options_that_matter_together_still_work(tmp_path, capsys):
    argv = ["train", "--dataset", "mnist-sample", "--epochs", "1", "--hidden", "4"]
    save = ["--save", str(tmp_path / "m.npz")]
    assert main([*argv, *save, "--optimizer", "sgd", "--momentum", "0.5"]) == 0
    assert main([*argv, *save, "--overwrite", "--nesterov", "--quiet"]) == 0
    capsys.readouterr()


# -- item 12: the last good epoch that is saved evaluates to a finite loss --------
def test_item12_a_diverged_run_saves_only_epochs_that_evaluate(tmp_path, capsys):
    div = tmp_path / "div.npz"
    argv = ["train", "--dataset", "mnist-sample", "--lr", "1e30"]
    argv += ["--batch-size", "5000", "--epochs", "4", "--save", str(div)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "Warning" not in err
    held = int(err.rsplit("holds epoch ", 1)[1].split()[0])
    assert load_checkpoint(div, "cpu")[0].epochs_trained == held
    assert main(["evaluate", str(div), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["loss"] is not None and np.isfinite(result["loss"])


def test_item12_fit_stops_before_a_callback_sees_weights_that_give_nan():
    rng = np.random.default_rng(0)
    x = rng.random((600, 20)).astype(np.float32) * 255
    y = rng.integers(0, 4, 600)
    model = mlp([20, 32, 4], device="cpu", seed=0, optimizer=SGD(lr=1e30))
    seen: list[float] = []

    def on_epoch_end(record):
        with np.errstate(all="ignore"):
            seen.append(model.evaluate(x, y)["loss"])

    with np.errstate(all="ignore"), pytest.raises(DivergenceError):
        model.fit(x, y, epochs=3, batch_size=600, on_epoch_end=on_epoch_end)
    assert all(np.isfinite(seen)), seen


# -- item 11: outputs that are not finite are an error, never a result -------------
@pytest.fixture(scope="module")
def standardized_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("std") / "run.npz"
    argv = ["train", "--dataset", "mnist-sample", "--epochs", "1", "--hidden", "8"]
    assert main([*argv, "--standardize", "--save", str(path), "--quiet"]) == 0
    return path


def _overflowing(run: Path, tmp_path: Path, name: str) -> Path:
    meta, arrays = _arrays(run)
    if name == "std":
        arrays["prep/std"] = np.full_like(arrays["prep/std"], 1e-38)
    else:
        arrays["param/0.W"] = np.full_like(arrays["param/0.W"], 3e38)
    return _write(tmp_path / f"{name}.npz", meta, arrays)


@pytest.mark.parametrize("name", ["std", "weight"])
def test_item11_cli_refuses_non_finite_answers(standardized_run, tmp_path, capfd, name):
    bad = _overflowing(standardized_run, tmp_path, name)
    assert main(["predict", str(bad), "mnist-sample:0"]) == 2
    assert "NaN or infinite outputs" in _one_line_error(capfd)
    assert main(["evaluate", str(bad)]) == 2
    assert "loss nan" in _one_line_error(capfd)


def test_item11_a_loaded_model_refuses_non_finite_answers(standardized_run, tmp_path):
    import xpnet

    bad = _overflowing(standardized_run, tmp_path, "weight")
    model = xpnet.load(bad, "cpu")
    x = np.full((3, 784), 0.5, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(XpnetError, match="NaN or infinite outputs"):
            model.predict(x)
        with pytest.raises(XpnetError, match="NaN or infinite outputs"):
            model.predict_proba(x)
        with pytest.raises(XpnetError, match="loss nan"):
            model.evaluate(x, np.zeros(3, np.int64))


def test_item11_a_value_beyond_float32_is_one_line(tmp_path, capfd):
    run = tmp_path / "raw.npz"
    argv = ["train", "--dataset", "mnist-sample", "--epochs", "1", "--hidden", "4"]
    assert main([*argv, "--no-scale", "--save", str(run), "--quiet"]) == 0
    capfd.readouterr()
    x = np.zeros((1, 784))
    x[0, 0] = 1e300
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(run), str(tmp_path / "x.npy")]) == 2
    assert "reach 1e+300, beyond float32" in _one_line_error(capfd)


# -- item 16: the scaling is chosen from the data, said and recorded --------------
@pytest.fixture(scope="module")
def counts_dataset(tmp_path_factory) -> Path:
    """Features 0..16 (like scikit-learn's digits), floats: not pixels."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, (200, 64)).astype(np.float32)
    y = rng.integers(0, 4, 200)
    path = tmp_path_factory.mktemp("counts") / "counts.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    return path


@pytest.mark.parametrize(
    ("extra", "said", "recorded"),
    [
        ([], "unscaled (not uint8 pixels: --scale MAX divides them)", None),
        (["--scale", "16"], "scaled / 16", 16.0),
        # --no-scale on floats would do nothing: refused (review item 17)
    ],
)
def test_item16_float_features_are_not_divided_by_255_unasked(
    counts_dataset, tmp_path, capsys, extra, said, recorded
):
    run = tmp_path / "run.npz"
    argv = ["train", "--dataset", str(counts_dataset), "--epochs", "1"]
    assert main([*argv, "--hidden", "4", "--save", str(run), *extra]) == 0
    data_line = next(
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("data:")
    )
    assert data_line.endswith(f"classes, {said}")
    _, meta = load_checkpoint(run, "cpu")
    assert meta["preprocessing"]["scale"] == recorded
    assert meta["train_options"]["scale"] == (16.0 if recorded else None)


def test_item16_uint8_pixels_are_divided_by_255_and_say_so(tmp_path, capsys):
    run = tmp_path / "run.npz"
    argv = ["train", "--dataset", "mnist-sample", "--epochs", "1", "--hidden", "4"]
    assert main([*argv, "--save", str(run)]) == 0
    assert "10 classes, pixels / 255" in capsys.readouterr().out
    assert load_checkpoint(run, "cpu")[1]["preprocessing"]["scale"] == 255.0


def test_item16_a_scale_below_the_data_is_refused(counts_dataset, capsys):
    argv = ["train", "--dataset", str(counts_dataset), "--scale", "10"]
    assert main(argv) == 2
    assert "the data holds values in [0, 16]" in _one_line_error(capsys)


# -- item 9: a saved model says how its inputs are prepared, or is not guessed -----
@pytest.fixture(scope="module")
def pixels_model():
    """A model trained from the library on mnist-sample's pixels / 255."""
    import xpnet
    from xpnet.datasets import load_dataset

    ds = load_dataset("mnist-sample")
    x = (ds.x_train.reshape(len(ds.x_train), -1) / 255.0).astype(np.float32)
    model = xpnet.mlp([784, 32, 10], device="cpu", seed=0)
    model.fit(x, ds.y_train, epochs=2, batch_size=64)
    return model


def _cli_refuses_to_guess(path: Path, tmp_path: Path, capsys) -> None:
    for argv in (
        ["evaluate", str(path), "--dataset", "mnist-sample"],
        ["predict", str(path), "mnist-sample:0"],
        ["export", str(path), str(tmp_path / "m.onnx")],
        ["train", "--resume", str(path), "--dataset", "mnist-sample", "--epochs", "3"],
    ):
        assert main(argv) == 2, argv
        err = _one_line_error(capsys)
        assert "does not record how its inputs were prepared" in err, argv
        assert "float32 values in [0, 1]" in err or "without their" in err, err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("how", ["save_checkpoint", "xpnet.save"])
def test_item9_a_library_save_of_scaled_floats_is_not_fed_raw_pixels(
    pixels_model, tmp_path, capsys, how
):
    import xpnet

    path = tmp_path / "lib.npz"
    if how == "xpnet.save":
        xpnet.save(path, pixels_model)
    else:
        save_checkpoint(path, pixels_model)
    _cli_refuses_to_guess(path, tmp_path, capsys)
    assert xpnet.load(path, "cpu").preprocessing is None


def test_item9_a_stated_preparation_is_used_and_survives_load_and_save(
    pixels_model, tmp_path, capsys
):
    import xpnet

    path = tmp_path / "stated.npz"
    xpnet.save(path, pixels_model, preprocessing=xpnet.Preprocessing(scale=255))
    assert main(["evaluate", str(path), "--dataset", "mnist-sample", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["accuracy"] > 0.85 and result["loss"] < 0.6
    loaded = xpnet.load(path, "cpu")
    assert isinstance(loaded, xpnet.Sequential) and loaded.preprocessing.scale == 255
    again = tmp_path / "again.npz"
    xpnet.save(again, loaded)
    assert main(["evaluate", str(again), "--dataset", "mnist-sample", "--json"]) == 0
    assert (
        json.loads(capsys.readouterr().out.splitlines()[-1])["loss"] == result["loss"]
    )


def test_item9_integer_inputs_need_no_statement(tmp_path, capsys):
    import xpnet
    from xpnet.datasets import load_dataset

    ds = load_dataset("mnist-sample")
    model = xpnet.mlp([784, 8, 10], device="cpu", seed=0, optimizer=SGD(lr=1e-4))
    model.fit(ds.x_train.reshape(len(ds.x_train), -1), ds.y_train, epochs=1)
    path = xpnet.save(tmp_path / "raw.npz", model)
    assert main(["evaluate", str(path), "--dataset", "mnist-sample"]) == 0
    assert "accuracy" in capsys.readouterr().out
    none = xpnet.save(tmp_path / "none.npz", model, preprocessing="none")
    assert xpnet.load(none, "cpu").preprocessing.scale is None


def test_item9_an_old_library_checkpoint_is_not_guessed(pixels_model, tmp_path, capsys):
    path = save_checkpoint(
        tmp_path / "stated.npz",
        pixels_model,
        {"preprocessing": {"deskew": False, "scale": None, "standardize": False}},
    )
    meta, arrays = _arrays(path)
    del meta["preprocessing"]["known"]  # as xpnet 0.1.0 wrote it
    old = _write(tmp_path / "old.npz", meta, arrays)
    assert main(["evaluate", str(old), "--dataset", "mnist-sample"]) == 2
    assert "without their preparation" in _one_line_error(capsys)
    assert main(["evaluate", str(path), "--dataset", "mnist-sample"]) == 0


def test_item9_the_readme_save_and_load_example_runs(tmp_path, monkeypatch, capsys):
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    example = re.search(r"## Library example\n\n```python\n(.*?)```", text, re.S)
    saving = re.search(r"Saving and loading:.*?```python\n(.*?)```", text, re.S)
    assert example and saving
    monkeypatch.chdir(tmp_path)
    exec(compile(example.group(1) + saving.group(1), "README.md", "exec"), {})
    assert (tmp_path / "model.npz").is_file()
    assert "known=True" in capsys.readouterr().out


# -- item 10: a bring-your-own dataset replaced in place is noticed ---------------
def _byo(path: Path, rows: int = 600, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (rows, 16)).astype(np.uint8)
    y = rng.integers(0, 3, rows)
    np.savez(path, x_train=x, y_train=y, x_test=x[:100], y_test=y[:100])


def _replace_in_place(path: Path, how: str) -> None:
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    rng = np.random.default_rng(1)
    if how == "permuted labels":
        arrays["y_train"] = rng.permutation(arrays["y_train"])
        arrays["y_test"] = rng.permutation(arrays["y_test"])
    elif how == "fewer rows":
        arrays["x_train"], arrays["y_train"] = (
            arrays["x_train"][:100],
            arrays["y_train"][:100],
        )
    else:
        arrays["x_test"] = 255 - arrays["x_test"]
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("how", "resume_says", "evaluate_says"),
    [
        (
            "permuted labels",
            "the labels of y_train changed (same shape)",
            "the labels of y_test changed",
        ),
        ("fewer rows", "x_train has 100 rows, was 600", None),
        ("new test images", "the values of x_test changed", "the values of x_test"),
    ],
)
def test_item10_a_dataset_replaced_in_place_is_refused_on_resume_and_flagged(
    tmp_path, capsys, how, resume_says, evaluate_says
):
    data, run = tmp_path / "mine.npz", tmp_path / "run.npz"
    _byo(data)
    argv = ["train", "--dataset", str(data), "--hidden", "4", "--quiet"]
    assert main([*argv, "--epochs", "1", "--save", str(run)]) == 0
    capsys.readouterr()
    before = run.read_bytes()
    _replace_in_place(data, how)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert resume_says in err and "is not the data checkpoint" in err
    assert run.read_bytes() == before
    assert main(["evaluate", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.splitlines()[-1])
    if evaluate_says is None:
        assert "dataset_changed" not in report and not captured.err
    else:
        assert evaluate_says in report["dataset_changed"]
        assert (
            captured.err.startswith("xpnet: warning: ")
            and evaluate_says in captured.err
        )


def test_item10_the_same_data_moved_elsewhere_resumes(tmp_path, capsys):
    data, run = tmp_path / "mine.npz", tmp_path / "run.npz"
    _byo(data)
    argv = ["train", "--dataset", str(data), "--hidden", "4", "--quiet"]
    assert main([*argv, "--epochs", "1", "--save", str(run)]) == 0
    moved = tmp_path / "moved.npz"
    data.rename(moved)
    resume = ["train", "--resume", str(run), "--dataset", str(moved), "--epochs", "2"]
    assert main([*resume, "--quiet"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("stated", "match"),
    [
        ("pixels", "give 'none'"),
        ({"scal": 255}, "unexpected keyword argument 'scal'"),
        ({"scale": -1}, "scale must be positive"),
        ({"mean": np.zeros(3), "std": np.ones(3)}, "the model has 4 inputs"),
        ({"mean": np.zeros(4)}, "both mean and std"),
        (3, "got int"),
    ],
)
def test_item9_a_wrong_statement_is_refused_before_writing(tmp_path, stated, match):
    import xpnet

    model = xpnet.mlp([4, 3], device="cpu")
    with pytest.raises(XpnetError, match=match):
        xpnet.save(tmp_path / "m.npz", model, preprocessing=stated)
    assert not list(tmp_path.iterdir())
