"""Fuzzing the CLI with malformed checkpoints and bring-your-own datasets.

Whatever the file holds, ``xpnet`` must end with exit 0, or exit 2 and one
``xpnet: error:`` line: never a traceback, never "unexpected error" (issue 8,
"Must show"). Bounded: a fixed number of examples, all in-process.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import re
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xpnet.cli import main

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples on every run: failures reproduce
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def run_cli(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("xpnet")
    handlers, propagate = list(logger.handlers), logger.propagate
    # No network: a fuzzed dataset name such as "mnist" fails fast.
    env = {"XPNET_MIRRORS": "http://127.0.0.1:9/", "XPNET_DATA": str(cwd / "cache")}
    try:
        with (
            mock.patch.dict(os.environ, env),
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            # A warning would reach a user's terminal; pytest would swallow it.
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code
    finally:
        # main() adds a handler per call and stops propagation (caplog needs it).
        logger.handlers[:], logger.propagate = handlers, propagate
    leaked = "".join(
        warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
        for w in caught
    )
    return code, out.getvalue(), leaked + err.getvalue()


def assert_clean_exit(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err and "unexpected error" not in err, err
    if code == 2:
        assert_one_error_line(err)


def assert_one_error_line(err: str) -> None:
    """One ``xpnet: error:`` line (``xpnet train: error:`` for usage errors),
    last; anything before it is a start-up notice (e.g. the busy-CPU hint)."""
    *notices, last = err.splitlines() or [""]
    assert re.match(r"xpnet( [a-z]+)?: error: ", last), err
    assert all(n.startswith("xpnet: ") and "error" not in n for n in notices), err


# ------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny dataset and a checkpoint trained on it (Adam, standardised)."""
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    np.savez(
        root / "toy.npz",
        x_train=rng.integers(0, 256, (24, 2, 3), dtype=np.uint8),
        y_train=np.arange(24) % 3,
        x_test=rng.integers(0, 256, (9, 2, 3), dtype=np.uint8),
        y_test=np.arange(9) % 3,
    )
    argv = ["train", "--dataset", str(root / "toy.npz"), "--epochs", "1"]
    argv += ["--hidden", "4", "--optimizer", "adam", "--standardize", "--deskew"]
    argv += ["--device", "cpu", "--quiet", "--save", str(root / "base.npz")]
    code, _, err = run_cli(argv, root)
    assert code == 0, err
    return root


def _paths(value, prefix=()):
    """Every key path inside a JSON value, parents before children."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    paths = []
    for key, item in items:
        paths.append((*prefix, key))
        paths += _paths(item, (*prefix, key))
    return paths


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 10**6, 10**9, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["float32", "Dense", "relu", "adam", "mnist-sample", "nan"]),
    st.lists(st.integers(-3, 10**6), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.recursive(st.integers(), lambda c: st.lists(c, max_size=2), max_leaves=4),
)


@st.composite
def meta_mutations(draw, meta):
    """A copy of ``meta`` with 1-3 keys dropped or replaced by junk (or junk)."""
    if draw(st.integers(0, 19)) == 0:
        return draw(JUNK)  # the whole metadata: null, a list, a number...
    meta = json.loads(json.dumps(meta))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(meta)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JUNK)
    return meta


@st.composite
def array_mutations(draw, arrays):
    """Arrays with one dropped, reshaped, retyped or poisoned (or unchanged)."""
    arrays = dict(arrays)
    name = draw(st.sampled_from(sorted(arrays)))
    how = draw(st.sampled_from(["keep", "drop", "shape", "nan", "int", "extra"]))
    if how == "drop":
        del arrays[name]
    elif how == "shape":
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        arrays[name] = np.ones(shape, np.float32)
    elif how == "nan":
        arrays[name] = arrays[name].astype(np.float64)
        arrays[name].flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif how == "int":
        arrays[name] = np.ones(arrays[name].shape, np.int64)
    elif how == "extra":
        arrays[f"param/{draw(st.integers(0, 9))}.W"] = np.ones(3)
    return arrays


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoint_evaluate_exits_0_or_2(workdir, data):
    with np.load(workdir / "base.npz", allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    meta = data.draw(meta_mutations(meta))
    arrays = data.draw(array_mutations(arrays))
    path = workdir / "fuzzed.npz"
    text = json.dumps(meta).encode()  # NaN and Infinity tokens included
    np.savez(path, meta=np.frombuffer(text, np.uint8), **arrays)
    code, _, err = run_cli(["evaluate", str(path), "--device", "cpu"], workdir)
    assert_clean_exit(code, err)


# ------------------------------------------------------------------ BYO npz

DTYPES = [np.uint8, np.int8, np.int64, np.uint64, np.float32, np.float64, np.bool_]
# Hypothesis favours small integers; sampled_from draws more evenly.
RARELY = st.sampled_from([False] * 5 + [True])
ODD_VALUES = st.sampled_from(
    [-1, 10**9, 2**40, 2**63 - 1, np.nan, np.inf, -np.inf, 1e30, -0.5, 256.0]
)


@st.composite
def npz_array(draw, shape: tuple[int, ...], labels: bool):
    """An array for one key: usually plausible, sometimes anything."""
    dtype = draw(st.sampled_from(DTYPES)) if draw(RARELY) else None
    if draw(RARELY):
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    count = int(np.prod(shape))
    usual = st.integers(0, 3) if labels else st.integers(0, 255) | st.floats(0, 1)
    values = st.one_of(usual, ODD_VALUES) if draw(st.booleans()) else usual
    host = np.array(
        draw(st.lists(values, min_size=count, max_size=count)), np.float64
    ).reshape(shape)
    if dtype is None:
        dtype = np.int64 if labels else np.float64
    if np.dtype(dtype).kind in "iub":
        host = np.nan_to_num(host, posinf=0, neginf=0)
        lo, hi = (0, 1) if dtype is np.bool_ else (-(2**62), 2**62)
        host = np.clip(host, lo, hi)
    with np.errstate(invalid="ignore", over="ignore"):
        return host.astype(dtype)


@st.composite
def npz_contents(draw):
    """x_train, y_train, x_test, y_test (maybe class_names), one maybe missing."""
    sample = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    n_train, n_test = draw(st.sampled_from(range(1, 7))), draw(st.integers(1, 4))
    arrays = {
        "x_train": draw(npz_array((n_train, *sample), False)),
        "y_train": draw(npz_array((n_train,), True)),
        "x_test": draw(npz_array((n_test, *sample), False)),
        "y_test": draw(npz_array((n_test,), True)),
    }
    if draw(st.booleans()):
        arrays["class_names"] = np.array(draw(st.lists(st.text(max_size=2))))
    if draw(RARELY):
        del arrays[draw(st.sampled_from(sorted(arrays)))]
    return arrays


@FUZZ
@given(arrays=npz_contents())
def test_fuzzed_dataset_train_exits_0_or_2(tmp_path_factory, arrays):
    root = tmp_path_factory.mktemp("npz", numbered=True)
    np.savez(root / "data.npz", **arrays)
    argv = ["train", "--dataset", str(root / "data.npz"), "--epochs", "1"]
    argv += ["--hidden", "3", "--batch-size", "4", "--device", "cpu", "--quiet"]
    code, _, err = run_cli(argv, root)
    assert_clean_exit(code, err)


def test_zip_without_npy_members_as_dataset_or_checkpoint(tmp_path):
    import zipfile

    path = tmp_path / "plain.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "no arrays here")
    for argv in (
        ["train", "--dataset", str(path), "--epochs", "1", "--device", "cpu"],
        ["evaluate", str(path), "--device", "cpu"],
    ):
        code, _, err = run_cli(argv, tmp_path)
        assert code == 2
        assert_clean_exit(code, err)


# ------------------------------------------------------------------ results
# Issue 16, "Done means": exit 0 must come with a finite result. JSON writes a
# non-finite float as null, so a number-valued key holding null is a NaN.

NUMBER_KEYS = {
    "loss",
    "accuracy",
    "test_loss",
    "test_accuracy",
    "train_accuracy",
    "probability",
    "probabilities",
    "value",
    "values",
}


def non_finite_results(value, path="$"):
    """Paths in a JSON value where a result is null (NaN) or not finite."""
    bad = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in NUMBER_KEYS and item is None:
                bad.append(where)
            bad += non_finite_results(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            bad += non_finite_results(item, f"{path}[{i}]")
    elif isinstance(value, float) and not np.isfinite(value):
        bad.append(path)
    return bad


def assert_finite_or_refused(code: int, out: str, err: str) -> None:
    """Exit 2 with one line, or exit 0 with a JSON last line of finite results."""
    assert_clean_exit(code, err)
    if code == 0:
        # notices only: no leaked RuntimeWarning or other library chatter
        lines = err.splitlines()
        assert all(line.startswith("xpnet: ") for line in lines), err
        report = json.loads(out.strip().splitlines()[-1])
        assert not non_finite_results(report), (non_finite_results(report), out)


def fuzzed_checkpoint_reader(workdir, command, data):
    """Every reader of a checkpoint: a finite answer, or exit 2 and one line."""
    with np.load(workdir / "base.npz", allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    # One kind of damage at a time, so that the subtle ones (an extreme weight
    # in a well-formed file) are not always hidden behind a broken metadata.
    how = data.draw(st.sampled_from(["meta", "arrays", "edge", "edge"]))
    if how == "meta":
        meta = data.draw(meta_mutations(meta))
    elif how == "arrays":
        arrays = data.draw(array_mutations(arrays))
    else:  # a weight or statistic pushed to the edge of float32
        name = data.draw(st.sampled_from(sorted(arrays)))
        if np.asarray(arrays[name]).dtype.kind == "f" and arrays[name].size:
            edge = data.draw(st.sampled_from([3e38, -3e38, 1e30, 1e-38, 0.0]))
            arrays[name] = np.full_like(arrays[name], edge)
    path = workdir / f"fuzzed-{command}.npz"
    text = json.dumps(meta).encode()
    np.savez(path, meta=np.frombuffer(text, np.uint8), **arrays)
    if command == "evaluate":
        argv = ["evaluate", str(path), "--device", "cpu", "--json"]
    elif command == "predict":
        sample = workdir / "sample.npy"
        np.save(sample, np.full((2, 3), 128, np.uint8))
        argv = ["predict", str(path), str(sample), "--device", "cpu", "--json"]
    else:
        pytest.importorskip("onnx")
        target = workdir / f"fuzzed-{data.draw(st.integers(0, 10**9))}.onnx"
        argv = ["export", str(path), str(target), "--json"]
    code, out, err = run_cli(argv, workdir)
    assert_finite_or_refused(code, out, err)


# ------------------------------------------------------------------ images


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory):
    """A small model trained for one epoch on the bundled MNIST sample."""
    root = tmp_path_factory.mktemp("digits")
    argv = ["train", "--dataset", "mnist-sample", "--epochs", "1", "--hidden", "16"]
    argv += ["--device", "cpu", "--quiet", "--save", str(root / "digits.npz")]
    code, _, err = run_cli(argv, root)
    assert code == 0, err
    return root / "digits.npz"


FILE_NUMBERS = itertools.count()
PIL_MODES = ["L", "LA", "RGB", "RGBA", "P", "I;16", "I", "F", "1"]


@st.composite
def image_files(draw, folder: Path):
    """An image or array file as a user might hand it to ``predict``, and
    whether it must be refused: no file format we read, an image without
    ink (blank or one colour), or a pixel that is not finite (issue 16, 17)."""
    kind = draw(st.sampled_from(["pil", "pil", "pil", "npy", "junk"]))
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    pattern = draw(st.sampled_from(["noise", "blank", "constant", "stroke"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if pattern == "noise":
        grey = rng.random((height, width))
    elif pattern == "blank":
        grey = np.zeros((height, width))
    elif pattern == "constant":
        grey = np.full((height, width), draw(st.floats(0, 1)))
    else:  # a bar of ink somewhere, dark on light or light on dark
        grey = np.zeros((height, width))
        top, left = rng.integers(0, height), rng.integers(0, width)
        grey[top : top + max(1, height // 2), left : left + max(1, width // 6)] = 1
        if draw(st.booleans()):
            grey = 1 - grey
    name = f"in-{next(FILE_NUMBERS)}"  # never the name of an earlier input
    if kind == "junk":
        payload = draw(
            st.sampled_from(
                [b"", b"not an image", b"%!PS-Adobe-3.0\n", b"\x89PNG\r\n\x1a\n"]
            )
        )
        path = folder / f"{name}.{draw(st.sampled_from(['png', 'jpg', 'npy']))}"
        path.write_bytes(payload)
        return path, True
    if kind == "npy":
        dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64]))
        scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
        array = grey * scale
        poisoned = np.dtype(dtype).kind == "f" and draw(RARELY)
        if poisoned:
            array.flat[0] = draw(st.sampled_from([np.nan, np.inf, 1e300]))
        shape = draw(st.sampled_from(["image", "flat", "batch", "odd"]))
        if shape == "flat":
            array = array.reshape(-1)
        elif shape == "batch":
            array = np.stack([array, array])
        elif shape == "odd":
            array = array.reshape(1, 1, *array.shape)
        path = folder / f"{name}.npy"
        with np.errstate(invalid="ignore", over="ignore"):
            np.save(path, array.astype(dtype))
        return path, poisoned
    from PIL import Image

    mode = draw(st.sampled_from(PIL_MODES))
    poisoned = False
    if mode in ("I;16", "I"):
        image = Image.fromarray((grey * 65535).astype(np.uint16))
        if mode == "I":
            image = image.convert("I")
    elif mode == "F":
        pixels = (grey * 255).astype(np.float32)
        if draw(RARELY):
            pixels.flat[0] = np.nan
            poisoned = True
        image = Image.fromarray(pixels, mode="F")
    else:
        image = Image.fromarray((grey * 255).astype(np.uint8)).convert(mode)
    suffix = {"F": "tiff", "I": "tiff"}.get(mode, "png")
    if mode in ("L", "RGB") and draw(st.booleans()):
        suffix = "jpg"
    path = folder / f"{name}.{suffix}"
    image.save(path)
    with Image.open(path) as saved:  # what the file holds (JPEG, mode "1", ...)
        pixels = np.asarray(saved.convert("F"))
    inkless = bool(np.nanmax(pixels) == np.nanmin(pixels))  # one colour
    return path, poisoned or inkless


def fuzzed_images_to_predict(digit_model, data):
    pytest.importorskip("PIL")
    folder = digit_model.parent
    drawn = [
        data.draw(image_files(folder)) for _ in range(data.draw(st.integers(1, 2)))
    ]
    argv = ["predict", str(digit_model), *(str(path) for path, _ in drawn)]
    code, out, err = run_cli([*argv, "--device", "cpu", "--json"], folder)
    assert_finite_or_refused(code, out, err)
    if any(refuse for _, refuse in drawn):
        assert code == 2, (drawn, out)
    if code == 0:
        for result in json.loads(out.strip().splitlines()[-1])["results"]:
            assert abs(sum(result["probabilities"]) - 1) < 1e-4, result


# ------------------------------------------------------------------ options

# Each option with plausible values, odd ones and wrong ones; a flag is None.
OPTION_VALUES: dict[str, list[str] | None] = {
    "--hidden": ["4", "3,2", "0", "-1", "4,", "x", ""],
    "--activation": ["relu", "tanh", "sigmoid", "gelu", "elu", "softplus", "silu"],
    "--output-activation": ["identity", "sigmoid", "softmax"],
    "--init": ["auto", "he-normal", "glorot-uniform", "he-uniform"],
    "--loss": ["cross-entropy", "mse", "bce"],
    "--optimizer": ["sgd", "adam", "adamw"],
    "--lr": ["0.001", "0.05", "0", "-1", "nan", "inf", "1e-300"],
    "--momentum": ["0", "0.5", "0.9", "1", "1.5", "-0.1", "nan"],
    "--nesterov": None,
    "--weight-decay": ["0", "0.01", "-1", "inf"],
    "--lr-decay": ["0", "0.1", "-1", "nan"],
    "--batch-size": ["1", "4", "1000", "0", "-3", "2.5"],
    "--epochs": ["0", "1", "2", "-1"],
    "--seed": ["0", "7", "-1", str(2**64), "340282366920938463463374607431768211457"],
    "--dtype": ["float32", "float64"],
    "--deskew": None,
    "--no-scale": None,
    "--standardize": None,
    "--validation-split": ["0.25", "0.5", "0", "1", "1.5", "nan"],
    "--blas-threads": ["1", "auto", "0", "-2"],
    "--quiet": None,
}


@st.composite
def option_sets(draw):
    """A few train options, each with a value drawn from its list."""
    names = draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), max_size=6))
    argv: list[str] = []
    for name in dict.fromkeys(names):
        values = OPTION_VALUES[name]
        argv += [name] if values is None else [name, draw(st.sampled_from(values))]
    return argv


def fuzzed_train_options(workdir, options):
    argv = ["train", "--dataset", str(workdir / "toy.npz"), "--device", "cpu"]
    argv += ["--epochs", "1", "--hidden", "4", "--json", *options]
    code, out, err = run_cli(argv, workdir)
    if code == 1 and "training diverged" in err:
        # Documented (README, exit codes): a diverging run stops with exit 1 and
        # one line that suggests a lower learning rate.
        assert_one_error_line(err)
        return
    assert_finite_or_refused(code, out, err)
    if code == 0:
        for record in json.loads(out.strip().splitlines()[-1])["history"]:
            assert np.isfinite(record["loss"]), record


# Each property runs twice: a bounded pass in the suite (a few seconds), and a
# long one, marked slow and run only when asked:
#   XPNET_FUZZ_EXAMPLES=2000 pytest -m slow tests/test_fuzz.py -k long
LONG_EXAMPLES = int(os.environ.get("XPNET_FUZZ_EXAMPLES", "0"))
LONG = settings(FUZZ, max_examples=max(LONG_EXAMPLES, 1), derandomize=False)
long_pass = pytest.mark.skipif(
    not LONG_EXAMPLES, reason="the long fuzz pass runs with XPNET_FUZZ_EXAMPLES=N"
)


def quick_and_long(body, quick=FUZZ, **strategies):
    """The property ``body`` as a bounded test and as a long, slow-marked one."""
    long = pytest.mark.slow(long_pass(LONG(given(**strategies)(body))))
    return quick(given(**strategies)(body)), long


READERS = pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
test_fuzzed_checkpoint_gives_a_finite_result_or_one_line, test_long_checkpoints = map(
    READERS, quick_and_long(fuzzed_checkpoint_reader, data=st.data())
)
test_fuzzed_images_give_a_finite_prediction_or_one_line, test_long_images = (
    quick_and_long(
        fuzzed_images_to_predict, settings(FUZZ, max_examples=60), data=st.data()
    )
)
test_fuzzed_train_options_give_a_finite_run_or_one_line, test_long_options = (
    quick_and_long(fuzzed_train_options, options=option_sets())
)
