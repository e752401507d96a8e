"""Tests for xpnet.preprocessing: scaling, standardisation and deskewing."""

import numpy as np
import pytest

from xpnet.datasets import Dataset, load_dataset
from xpnet.errors import XpnetError
from xpnet.preprocessing import deskew, preprocess, scale, skew, standardize

H = W = 28


def stroke(slant: float, width: float = 1.2, top: int = 5, bottom: int = 23):
    """A 28x28 float image of a pen stroke whose centre line is
    ``x = 14 + slant * (y - 14)``: an upright stroke sheared by ``slant``."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    centre = W / 2 + slant * (y - H / 2)
    img = np.exp(-((x - centre) ** 2) / (2 * width**2))
    img[(y < top) | (y > bottom)] = 0.0
    return img * 255.0


def ellipse(cy=14.0, cx=14.0, ry=8.0, rx=5.0):
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    return 255.0 * (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0)


def centre_of_mass(img):
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return (img * y).sum() / img.sum(), (img * x).sum() / img.sum()


# --------------------------------------------------------------------------- scale


def test_scale_uint8_to_unit_range():
    x = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    out = scale(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, x / 255.0, rtol=1e-6)
    assert scale(x, dtype="float64").dtype == np.float64


def test_scale_other_inputs():
    unit = np.array([0.0, 0.5, 1.0])
    np.testing.assert_array_equal(scale(unit), unit)  # already in [0, 1]
    np.testing.assert_allclose(scale(np.array([0.0, 51.0, 255.0])), [0, 0.2, 1])
    np.testing.assert_allclose(scale(np.array([0, 500]), max_value=1000), [0, 0.5])
    with pytest.raises(XpnetError, match=r"cannot scale values in \[-2, 3\]"):
        scale(np.array([-2.0, 3.0]))
    with pytest.raises(XpnetError, match="float32 or float64"):
        scale(unit, dtype="int32")


# ------------------------------------------------------------------------ standardize


def test_standardize_uses_train_statistics():
    rng = np.random.default_rng(0)
    x_train = rng.normal(loc=[1.0, -3.0, 10.0], scale=[2.0, 0.5, 4.0], size=(500, 3))
    x_train = x_train.astype(np.float32)
    x_test = rng.normal(size=(50, 3)).astype(np.float32)
    tr, te, mean, std = standardize(x_train, x_test)
    assert tr.dtype == te.dtype == mean.dtype == std.dtype == np.float32
    assert mean.shape == std.shape == (3,)
    np.testing.assert_allclose(tr.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(tr.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(mean, x_train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, x_train.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(te, (x_test - mean) / std, rtol=1e-5)


def test_standardize_only_centres_constant_features():
    x_train = np.zeros((100, 3))
    x_train[:, 0] = np.arange(100)  # std ~28.9
    x_train[:, 1] = 0.1  # constant, not exactly representable
    x_train[:50, 2] = 1e-6  # nearly constant, but not constant
    x_test = np.full((4, 3), 6.0)
    result = standardize(x_train, x_test)
    assert result.x_train.dtype == np.float64  # float64 input stays float64
    # As scikit-learn's StandardScaler: the constant feature is only centred...
    np.testing.assert_allclose(result.std, [np.arange(100).std(), 1.0, 5e-7])
    np.testing.assert_allclose(result.x_test[:, 1], 5.9)
    # ... unless a floor is given.
    custom = standardize(x_train, x_test, min_std=1.0)
    np.testing.assert_allclose(custom.std[1:], 1.0)
    with pytest.raises(XpnetError, match="same feature count"):
        standardize(x_train, x_test[:, :2])
    for bad in (-1.0, "max"):
        with pytest.raises(XpnetError, match="min_std must be"):
            standardize(x_train, x_test, min_std=bad)


def test_standardize_pooled_floor_keeps_rare_pixels_small(sample):
    """Issue 8.2: a 1%-of-max floor turned MNIST's rarely lit border pixels into
    test-set z-scores of ~1,600; the pooled floor bounds them by the data's scale."""
    x_train, x_test = sample.x_train / 255.0, sample.x_test / 255.0
    pooled = standardize(x_train, x_test, min_std="pooled")
    np.testing.assert_allclose(pooled.std.min(), x_train.std(), rtol=1e-6)
    np.testing.assert_allclose(pooled.std.max(), x_train.std(axis=0).max())
    # No feature is amplified beyond a global (x - mean) / pooled std.
    assert np.abs(pooled.x_test).max() <= 1 / x_train.std()
    assert np.abs(standardize(x_train, x_test).x_test).max() > 1000  # plain z-scores
    # preprocess floors scaled pixels, not features in their own units.
    np.testing.assert_allclose(
        preprocess(sample, standardize=True).preprocessing["std"], pooled.std
    )
    unscaled = preprocess(sample, standardize=True, scale=False)
    np.testing.assert_allclose(
        unscaled.preprocessing["std"].min(),
        x_train.std(axis=0)[x_train.std(0) > 0].min() * 255,
        rtol=1e-5,
    )


def test_standardize_all_zero_data_only_centres():
    result = standardize(np.zeros((5, 2), np.uint8), np.ones((2, 2), np.uint8))
    np.testing.assert_array_equal(result.std, 1.0)
    np.testing.assert_array_equal(result.x_test, 1.0)


# --------------------------------------------------------------------------- deskew


@pytest.mark.parametrize("slant", [0.45, -0.3])
def test_skew_measures_the_slant(slant):
    assert skew(stroke(slant)[None])[0] == pytest.approx(slant, abs=0.02)


def test_deskew_straightens_a_sheared_stroke():
    sheared = stroke(0.45)
    out = deskew(sheared[None])[0]
    assert abs(skew(out[None])[0]) < 0.03  # from 0.45
    # The result looks like the upright stroke, not just any unslanted blob.
    upright = stroke(0.0)
    assert np.abs(out - upright).mean() < 0.1 * np.abs(sheared - upright).mean()
    # Shearing moves mass sideways within each row; it neither creates nor loses it.
    assert out.sum() == pytest.approx(sheared.sum(), rel=0.01)


def test_deskew_leaves_upright_images_alone():
    for img in (stroke(0.0), ellipse()):
        np.testing.assert_allclose(deskew(img[None])[0], img, atol=1e-3)


def test_deskew_recentres_the_centre_of_mass():
    img = ellipse(cy=10.0, cx=18.0, ry=4, rx=3)
    moved = deskew(img[None])[0]
    assert centre_of_mass(moved) == pytest.approx((14.0, 14.0), abs=0.05)
    kept = deskew(img[None], recentre=False)[0]
    np.testing.assert_allclose(kept, img, atol=1e-3)


def test_deskew_preserves_shape_and_dtype():
    batch = np.stack([stroke(0.3), stroke(-0.2), np.zeros((H, W))])
    as_uint8 = np.rint(batch).astype(np.uint8)
    flat = deskew(as_uint8.reshape(3, H * W))
    assert flat.shape == (3, H * W) and flat.dtype == np.uint8
    cube = deskew(batch.astype(np.float32))
    assert cube.shape == (3, H, W) and cube.dtype == np.float32
    assert deskew(batch).dtype == np.float64
    np.testing.assert_array_equal(cube[2], 0.0)  # blank stays blank, no NaN
    np.testing.assert_allclose(flat.reshape(3, H, W), cube, atol=1.0)


def test_deskew_non_square_images():
    img = np.zeros((10, 20))
    img[2:8, 8:11] = 1.0
    out = deskew(img.reshape(1, 200), image_shape=(10, 20))
    assert out.shape == (1, 200)
    with pytest.raises(XpnetError, match="not a square image"):
        deskew(img.reshape(1, 200))
    with pytest.raises(XpnetError, match="has 100 pixels"):
        deskew(img.reshape(1, 200), image_shape=(10, 10))


def test_deskew_real_mnist():
    ds = load_dataset("mnist-sample")
    before = np.abs(skew(ds.x_test)).mean()
    out = deskew(ds.x_test)  # all 10,000 test digits: well under a second
    after = np.abs(skew(out)).mean()
    assert before > 0.15
    assert after < 0.1 * before
    assert out.shape == ds.x_test.shape and out.dtype == np.uint8


# --------------------------------------------------------------------------- preprocess


@pytest.fixture(scope="module")
def sample():
    return load_dataset("mnist-sample")


def test_preprocess_scales_by_default(sample):
    ds = preprocess(sample)
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape == (5000, 784)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    np.testing.assert_array_equal(ds.y_train, sample.y_train)
    assert ds.preprocessing["scale"] == 255.0 and ds.preprocessing["mean"] is None
    assert sample.x_train.dtype == np.uint8 and not sample.preprocessing  # untouched
    assert ds.class_names == sample.class_names and ds.num_classes == 10


def test_preprocess_standardize_and_deskew(sample):
    ds = preprocess(sample, standardize=True, deskew=True, dtype="float64")
    assert ds.x_test.dtype == np.float64
    mean, std = ds.preprocessing["mean"], ds.preprocessing["std"]
    assert mean.shape == std.shape == (784,)
    assert abs(ds.x_train.mean()) < 1e-6
    assert ds.preprocessing["deskew"] is True
    # Deskewed in pixel units first, then scaled and standardised.
    expected = (deskew(sample.x_test.astype(np.float64)) / 255.0 - mean) / std
    np.testing.assert_allclose(ds.x_test, expected, atol=1e-6)


def test_preprocess_errors(sample):
    with pytest.raises(XpnetError, match="already preprocessed"):
        preprocess(preprocess(sample))
    tabular = Dataset(
        name="t",
        x_train=np.zeros((4, 3)),
        y_train=np.zeros(4, np.int64),
        x_test=np.zeros((2, 3)),
        y_test=np.zeros(2, np.int64),
        num_classes=1,
        image_shape=None,
        source="test",
    )
    with pytest.raises(XpnetError, match="no image shape; cannot deskew"):
        preprocess(tabular, deskew=True)
    assert preprocess(tabular, scale=True).preprocessing["scale"] == 1.0


def test_transform_replays_a_recorded_preprocessing():
    from xpnet.datasets import load_mnist_sample
    from xpnet.preprocessing import preprocess, transform

    raw = load_mnist_sample()
    done = preprocess(raw, deskew=True, standardize=True)
    info = done.preprocessing
    again = transform(
        raw.x_test[:50],
        deskew=True,
        scale=info["scale"],
        mean=info["mean"],
        std=info["std"],
        image_shape=raw.image_shape,
    )
    assert again.dtype == done.x_test.dtype
    np.testing.assert_allclose(again, done.x_test[:50], rtol=1e-5, atol=1e-5)


def test_cli_standardize_does_not_hurt_mnist_sample():
    """Issue 8.2: ``xpnet train --dataset mnist-sample --standardize`` went from
    loss 1.67 to 836,240 and 80.8% test accuracy; unstandardised it gets 95.05%,
    and standardised it must get within 0.5 points of that."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("xpnet")
    proc = subprocess.run(
        [str(script), "train", "--dataset", "mnist-sample", "--device", "cpu"]
        + ["--standardize", "--quiet", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    losses = [row["loss"] for row in result["history"]]
    assert losses[-1] < 0.1 < losses[0] < 1
    assert result["history"][-1]["test_accuracy"] >= 0.9505 - 0.005


def test_transform_takes_pixels_or_already_scaled_floats(sample):
    """Issue 8.3: floats already in [0, 1] were divided by the scale again."""
    from xpnet.preprocessing import transform

    pixels = sample.x_test[:5]
    expected = transform(pixels, scale=255.0, deskew=True, image_shape=(28, 28))
    for same in (pixels / 255.0, pixels.astype(np.float64), pixels.astype(np.int64)):
        got = transform(same, scale=255.0, deskew=True, image_shape=(28, 28))
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # A model scaled by 1 saw floats in [0, 1]: integers are 0-255 pixels.
    np.testing.assert_allclose(transform(pixels, scale=1.0), pixels / 255.0)
    np.testing.assert_array_equal(transform(pixels * 2.0), pixels * 2.0)  # no scale
    for bad, match in [
        (pixels / 255.0 - 0.5, r"values in \[-0.5, 0.5\] do not fit"),
        (pixels * 2.0, r"\[0, 510\] do not fit .* expects pixels 0-255 or floats"),
        (np.full((1, 3), np.nan), "NaN or infinity"),
        (np.ones((1, 3), bool), "expected numbers"),
    ]:
        with pytest.raises(XpnetError, match=match):
            transform(bad, scale=255.0)
    with pytest.raises(XpnetError, match=r"expects values in \[0, 1\]$"):
        transform(np.full((1, 3), 2.0), scale=1.0)


def test_standardize_statistics_from_fit_rows_only_transform_every_row():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    x[40:] += 100.0  # rows left out of the statistics
    rows = np.arange(40)
    part = standardize(x, x[:5], fit_rows=rows)
    whole = standardize(x[:40], x[:5])
    np.testing.assert_array_equal(part.mean, whole.mean)
    np.testing.assert_array_equal(part.std, whole.std)
    assert part.x_train.shape == x.shape  # every row transformed
    np.testing.assert_array_equal(part.x_train[:40], whole.x_train)


def test_cli_standardize_leaves_the_held_out_rows_out_of_its_statistics(tmp_path):
    """--validation-split with --standardize: the mean and std come from the
    rows fit trains on, not from the rows it validates on."""
    from xpnet import cli
    from xpnet.checkpoint import Checkpoint
    from xpnet.rng import validation_split

    save = tmp_path / "run.npz"
    argv = ["train", "--dataset", "mnist-sample", "--device", "cpu", "--quiet",
            "--hidden", "8", "--epochs", "1", "--standardize", "--seed", "3",
            "--validation-split", "0.2", "--save", str(save)]  # fmt: skip
    assert cli.main(argv) == 0
    mean = Checkpoint.from_file(str(save)).preprocessing.mean
    raw = load_dataset("mnist-sample")
    x = raw.x_train.astype(np.float32) / np.float32(255)
    train, held = validation_split(3, len(raw.y_train), 0.2, raw.y_train)
    assert len(held) == 1000
    np.testing.assert_allclose(mean, x[train].mean(axis=0, dtype=np.float64), atol=1e-6)
    assert not np.allclose(mean, x.mean(axis=0), atol=1e-4)
