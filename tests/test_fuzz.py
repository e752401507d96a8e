"""Fuzzing the CLI with malformed checkpoints and bring-your-own datasets.

Whatever the file holds, ``xpnet`` must end with exit 0, or exit 2 and one
``xpnet: error:`` line: never a traceback, never "unexpected error" (issue 8,
"Must show"). Bounded: a fixed number of examples, all in-process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
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
        ):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code
    finally:
        # main() adds a handler per call and stops propagation (caplog needs it).
        logger.handlers[:], logger.propagate = handlers, propagate
    return code, out.getvalue(), err.getvalue()


def assert_clean_exit(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err and "unexpected error" not in err, err
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("xpnet: error:"), err


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
