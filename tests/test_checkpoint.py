"""Checkpoints from untrusted files: every malformation is one CheckpointError
line, found before the model is built (issue 8, items 12 and 14)."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

from xpnet.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from xpnet.cli import main
from xpnet.errors import XpnetError
from xpnet.model import mlp


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small trained checkpoint with Adam state and standardisation stats."""
    rng = np.random.default_rng(0)
    x = rng.random((32, 6)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    model = mlp([6, 4, 3], "leaky_relu", optimizer="adam", device="cpu", seed=1)
    model.fit(x, y, epochs=1, batch_size=8)
    path = tmp_path_factory.mktemp("ck") / "good.npz"
    extra = {
        "dataset": {"name": "toy", "image_shape": [2, 3], "class_names": list("abc")},
        "train_options": {"dataset": "toy.npz", "batch_size": 8, "hidden": [4]},
        "preprocessing": {"deskew": False, "scale": None, "standardize": True},
        "history": [{"epoch": 1, "loss": 1.0}],
    }
    prep = {"mean": np.zeros(6, np.float32), "std": np.ones(6, np.float32)}
    return save_checkpoint(path, model, extra, prep)


def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    return json.loads(arrays.pop("meta").tobytes()), arrays


def _write(path, meta, arrays, raw_meta: bytes | None = None):
    text = raw_meta if raw_meta is not None else json.dumps(meta).encode()
    np.savez(path, meta=np.frombuffer(text, np.uint8), **arrays)
    return path


def _edited(good, tmp_path, edit=None, edit_arrays=None):
    meta, arrays = _arrays(good)
    if edit:
        meta = edit(meta)
    if edit_arrays:
        edit_arrays(arrays)
    return _write(tmp_path / "edited.npz", meta, arrays)


def _refused(path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path, "cpu")
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(info.value, XpnetError)
    return message


def test_good_checkpoint_loads(good):
    model, meta = load_checkpoint(good, "cpu")
    assert model.optimizer.iterations == 4 and meta["epochs_trained"] == 1
    assert sorted(meta["preprocessing_arrays"]) == ["mean", "std"]


def test_checkpoint_without_optimizer_state_loads(good, tmp_path):
    def drop_slots(arrays):
        for key in [k for k in arrays if k.startswith("opt/")]:
            del arrays[key]

    model, _ = load_checkpoint(_edited(good, tmp_path, None, drop_slots), "cpu")
    assert model.optimizer.slots == {}  # zeroed when it first binds


# --------------------------------------------------------------------- item 12


def _widen(width):
    def edit(meta):
        layers = meta["architecture"]["layers"]
        layers[0]["out_features"] = layers[2]["in_features"] = width
        return meta

    return edit


@pytest.mark.parametrize("width", [10**6, 10**9])
def test_huge_claimed_width_is_refused_before_building(good, tmp_path, width):
    # Before: 10**6 built a 9 GB model for 48 s, 10**9 raised MemoryError.
    path = _edited(good, tmp_path, _widen(width))
    message = _refused(path, "array 'param/0.W' is \\(6, 4\\)")
    assert f"needs (6, {width})" in message


def test_stored_shape_that_differs_from_the_architecture(good, tmp_path):
    def swap(arrays):
        arrays["param/2.b"] = np.zeros(5, np.float32)

    _refused(_edited(good, tmp_path, None, swap), "'param/2.b' is \\(5,\\)")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("param/0.W", "'param/0.W' contains NaN"),
        ("param/2.b", "'param/2.b' contains NaN"),
        ("opt/slot0.m", "'opt/slot0.m' contains NaN"),
        ("opt/slot3.v", "'opt/slot3.v' contains NaN"),
        ("prep/mean", "'prep/mean' contains NaN"),
    ],
)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_or_state_are_refused(good, tmp_path, name, match, bad):
    def poison(arrays):
        arrays[name] = arrays[name].copy()
        arrays[name].flat[0] = bad

    _refused(_edited(good, tmp_path, None, poison), match.replace("NaN", "NaN or"))


def test_non_positive_std_is_refused(good, tmp_path):
    def zero(arrays):
        arrays["prep/std"] = np.zeros(6, np.float32)

    _refused(_edited(good, tmp_path, None, zero), "'prep/std' has values <= 0")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda a: a.pop("param/2.W"), "missing param/2.W"),
        (lambda a: a.pop("opt/slot1.v"), "missing opt/slot1.v"),
        (lambda a: a.pop("prep/std"), "missing prep/std"),
        (lambda a: a.update({"param/7.W": np.ones(2)}), "unexpected param/7.W"),
        (lambda a: a.update({"opt/slot9.m": np.ones(2)}), "unexpected opt/slot9.m"),
    ],
)
def test_missing_or_extra_arrays(good, tmp_path, edit, match):
    _refused(_edited(good, tmp_path, None, edit), match)


def test_array_declaring_more_than_the_file_holds(tmp_path):
    # A 100-byte .npy header claiming (10**6, 10**6) floats: numpy.load would
    # allocate 4 TB before finding the data missing.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("param/0.W.npy", header.getvalue() + b"\0" * 64)
    _refused(path, "declares shape \\(1000000, 1000000\\) float32")


# --------------------------------------------------------------------- item 14


def _set(path, value):
    keys = path.split(".")

    def edit(meta):
        obj = meta
        for key in keys[:-1]:
            obj = obj[int(key)] if isinstance(obj, list) else obj[key]
        obj[int(keys[-1]) if isinstance(obj, list) else keys[-1]] = value
        return meta

    return edit


def _drop(path):
    keys = path.split(".")

    def edit(meta):
        obj = meta
        for key in keys[:-1]:
            obj = obj[key]
        del obj[keys[-1]]
        return meta

    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: None, "it is a JSON NoneType, not an object"),
        (lambda m: [m], "it is a JSON list, not an object"),
        (lambda m: 3, "it is a JSON int, not an object"),
        (_drop("architecture.dtype"), "architecture.dtype is missing"),
        (_drop("rng_state"), "rng_state is missing"),
        (_drop("optimizer.iterations"), "optimizer.iterations is missing"),
        (_drop("epochs_trained"), "epochs_trained is missing"),
        (_drop("architecture"), "architecture is missing"),
        (_set("architecture", []), "architecture is \\[\\]"),
        (_set("architecture.layers", []), "non-empty list of objects"),
        (_set("architecture.layers", [1, 2]), "non-empty list of objects"),
        (_set("architecture.dtype", "float16"), "architecture.dtype is 'float16'"),
        (_set("architecture.dtype", ["float32"]), "architecture.dtype is"),
        (_set("architecture.layers.1.type", "Conv2D"), "unknown layer type 'Conv2D'"),
        (_set("architecture.layers.1", {"kind": "ReLU"}), "unusable architecture"),
        (_set("architecture.layers.0.out_features", 4.0), "positive integer"),
        (_set("architecture.layers.0.out_features", -4), "positive integer"),
        (_set("architecture.layers.0.init", 7), "unknown initialiser"),
        (_set("architecture.layers.1.alpha", float("nan")), "layers.1.alpha"),
        (_set("architecture.layers.1.alpha", "nan"), "LeakyReLU alpha is nan"),
        (_set("architecture.layers.1.alpha", [1]), "unusable architecture"),
        (_set("architecture.layers.2.in_features", 5), "do not chain"),
        (_set("architecture.loss.type", "Hinge"), "unknown loss 'Hinge'"),
        (_set("architecture.loss", {"type": "MSE", "x": 1}), "unknown loss"),
        (_set("architecture.loss.bogus", 1), "unusable architecture"),
        (_set("architecture.task", 5), "architecture.task is 5"),
        (_set("optimizer.name", "rmsprop"), "unusable architecture or optimizer"),
        (_set("optimizer.name", None), "optimizer.name is None"),
        (_set("optimizer.config.beta1", 2), "beta1 must be in"),
        (_set("optimizer.config.eps", -1), "eps must be a non-negative"),
        (_set("optimizer.config.momentum", 0.9), "unusable architecture"),
        (_set("optimizer.config", "adam"), "optimizer.config is 'adam'"),
        (_set("optimizer.schedule.name", "warp"), "unknown schedule 'warp'"),
        (_set("optimizer.schedule.lr", 0), "learning rate must be a positive"),
        (_set("optimizer.schedule.lr", "0.1"), None),  # float("0.1"): accepted
        (_set("optimizer.schedule.lr", float("inf")), "schedule.lr is not a finite"),
        (_set("optimizer.iterations", -1), "optimizer.iterations is -1"),
        (_set("optimizer.iterations", "4"), "optimizer.iterations is '4'"),
        (_set("optimizer.iterations", 2**70), "optimizer.iterations is"),
        (_set("optimizer.iterations", True), "optimizer.iterations is True"),
        (_set("epochs_trained", 1.5), "epochs_trained is 1.5"),
        (_set("seed", -1), "seed is -1"),
        (_set("seed", "0"), "seed is '0'"),
        (_set("rng_state", {}), "rng_state is unusable"),
        (_set("rng_state.bit_generator", "MT19937"), "rng_state is unusable"),
        (_set("rng_state.state.state", -5), "rng_state is unusable"),
        (_set("format_version", "1"), "format_version is '1'"),
        (_set("format_version", 0), "format_version is 0"),
        (_set("dataset", ["mnist"]), "dataset is \\['mnist'\\]"),
        (_set("dataset.image_shape", [28]), "dataset.image_shape is \\[28\\]"),
        (_set("dataset.image_shape", [0, 6]), "dataset.image_shape is"),
        (_set("dataset.class_names", [1, 2, 3]), "class_names must be a list"),
        (_set("dataset.name", 5), "dataset.name is 5"),
        (_set("train_options", None), "train_options is None"),
        (_set("train_options.batch_size", 0), "train_options.batch_size is 0"),
        (_set("train_options.batch_size", "8"), "train_options.batch_size is '8'"),
        (_set("train_options.hidden", [0]), "train_options.hidden is \\[0\\]"),
        (_set("train_options.dataset", 3), "train_options.dataset is 3"),
        (_set("train_options.standardize", "yes"), "train_options.standardize"),
        (_set("preprocessing", "none"), "preprocessing is 'none'"),
        (_set("preprocessing.scale", -255), "preprocessing.scale is -255"),
        (_set("preprocessing.scale", "255"), "preprocessing.scale is '255'"),
        (_set("preprocessing.deskew", 1), "preprocessing.deskew is 1"),
        (_set("history", {}), "history is \\{\\}"),
        (_set("history", [1]), "history must be a list of objects"),
    ],
)
def test_malformed_metadata_is_one_checkpoint_error(good, tmp_path, edit, match):
    path = _edited(good, tmp_path, edit)
    if match is None:
        load_checkpoint(path, "cpu")
    else:
        _refused(path, match)


def test_deskew_needs_an_image_shape_that_fits(good, tmp_path):
    def edit(meta):
        meta["preprocessing"]["deskew"] = True
        meta["dataset"]["image_shape"] = [2, 2]
        return meta

    _refused(_edited(good, tmp_path, edit), "image_shape \\[2, 2\\] does not hold")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{not json", "corrupt metadata \\(JSONDecodeError"),
        (b"\xff\xfe", "corrupt metadata \\(UnicodeDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "corrupt metadata \\(RecursionError"),
        (b'{"format": 1' + b"0" * 5000 + b"}", "corrupt metadata \\(ValueError"),
    ],
    ids=["bad-json", "not-utf8", "deep-nesting", "5000-digit-int"],
)
def test_undecodable_metadata(good, tmp_path, raw, match):
    _, arrays = _arrays(good)
    _refused(_write(tmp_path / "raw.npz", None, arrays, raw_meta=raw), match)


def test_metadata_stored_with_the_wrong_dtype(good, tmp_path):
    meta, arrays = _arrays(good)
    path = tmp_path / "m.npz"
    np.savez(path, meta=np.zeros(3, np.float64), **arrays)
    _refused(path, "meta is \\(3,\\) float64, not UTF-8 bytes")


def test_zip_without_npy_members(tmp_path):
    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
        z.writestr("meta", b'{"format": "xpnet-checkpoint"}')  # no .npy suffix
    _refused(path, "not an xpnet checkpoint \\(no metadata\\)")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.npy", b"not an array at all")
    _refused(path, "cannot read the header of array 'meta'")


def test_single_npy_or_garbage_is_refused(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    _refused(path, "holds a single array")
    path.write_bytes(b"PK\x03\x04 not really a zip")
    _refused(path, "is corrupt or not an xpnet .npz file")


def test_read_checkpoint_validates_too(good, tmp_path):
    with pytest.raises(CheckpointError, match="rng_state is missing"):
        read_checkpoint(_edited(good, tmp_path, _drop("rng_state")))


@pytest.mark.parametrize(
    "edit", [lambda m: None, _drop("architecture.dtype"), _widen(10**9)]
)
def test_cli_evaluate_exits_2_with_one_line(good, tmp_path, edit):
    path = _edited(good, tmp_path, edit)
    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("xpnet")
    handlers, propagate = list(logger.handlers), logger.propagate
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["evaluate", str(path), "--device", "cpu"])
    finally:  # main() adds a handler and stops propagation (caplog needs it)
        logger.handlers[:], logger.propagate = handlers, propagate
    assert code == 2, err.getvalue()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnet: error: checkpoint")


@pytest.mark.parametrize(
    "dataset,match",
    [
        # Found by a review: predict resized images to this shape (10**6 squared
        # ran out of memory), whether or not the model was deskewed.
        ({"image_shape": [4000, 4000]}, r"image_shape \[4000, 4000\] does not hold"),
        # ... and indexed these names by the predicted class (IndexError, exit 1).
        ({"class_names": ["a"]}, "class_names has 1 names for a model with 3 outputs"),
    ],
)
def test_dataset_facts_must_fit_the_model(good, tmp_path, dataset, match):
    def edit(meta):
        meta["dataset"] = {**meta.get("dataset", {}), **dataset}
        return meta

    _refused(_edited(good, tmp_path, edit), match)
