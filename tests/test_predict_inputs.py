"""``xpnet predict`` inputs: units, transparent images and bad files (issue 8.3,
the predict cases of 8.14, and issue 12's wrong-shape array)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from test_cli import last_json, one_line_error, run

from xpnet.datasets import load_dataset


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small checkpoint that replays every step: deskew, scale, standardise."""
    tmp = tmp_path_factory.mktemp("predict")
    proc = run(
        "train",
        "--dataset",
        "mnist-sample",
        "--device",
        "cpu",
        "--hidden",
        "16",
        "--batch-size",
        "256",
        "--epochs",
        "2",
        "--deskew",
        "--standardize",
        "--save",
        "m.npz",
        "--quiet",
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp


@pytest.fixture(scope="module")
def digits():
    """Three test digits, (3, 28, 28) uint8, and their true labels."""
    test = load_dataset("mnist-sample")
    return test.x_test[:3].reshape(3, 28, 28), test.y_test[:3]


def predict(cwd, *inputs: str) -> list[dict]:
    proc = run("predict", "m.npz", *inputs, "--device", "cpu", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return last_json(proc.stdout)["results"]


def predict_error(cwd, *inputs: str) -> str:
    proc = run("predict", "m.npz", *inputs, "--device", "cpu", cwd=cwd)
    assert proc.returncode == 2, proc.stderr
    return one_line_error(proc)


def test_float_image_in_unit_range_is_not_scaled_twice(model_dir, digits):
    """Issue 8.3: a float image in [0, 1] was divided by 255 again and answered
    confidently wrong; it must answer as its 0-255 original does."""
    images, _ = digits
    np.save(model_dir / "u8.npy", images)
    np.save(model_dir / "unit.npy", images / 255.0)
    np.save(model_dir / "unit32.npy", (images / 255.0).astype(np.float32)[0])
    np.save(model_dir / "float255.npy", images.astype(np.float64))
    u8, unit, unit32, f255 = (
        predict(model_dir, name)
        for name in ("u8.npy", "unit.npy", "unit32.npy", "float255.npy")
    )
    for other in (unit, f255):
        assert [r["prediction"] for r in other] == [r["prediction"] for r in u8]
        np.testing.assert_allclose(
            [r["probabilities"] for r in other],
            [r["probabilities"] for r in u8],
            atol=1e-5,
        )
    assert unit32[0]["prediction"] == u8[0]["prediction"]
    np.testing.assert_allclose(
        unit32[0]["probabilities"], u8[0]["probabilities"], atol=1e-5
    )


@pytest.mark.parametrize(
    "values,shown",
    [
        (lambda x: x / 255.0 - 0.5, "[-0.5, 0.5]"),
        (lambda x: x * 4.0, "[0, 1020]"),
        (lambda x: x.astype(np.int64) * 2, "[0, 510]"),
    ],
)
def test_values_no_preprocessing_explains_are_refused(model_dir, digits, values, shown):
    np.save(model_dir / "odd.npy", values(digits[0][0]))
    message = predict_error(model_dir, "odd.npy")
    assert f"values in {shown} do not fit" in message
    assert "pixels 0-255 or floats already scaled to [0, 1]" in message


def test_nan_input_is_refused(model_dir):
    np.save(model_dir / "nan.npy", np.full(784, np.nan))
    assert "NaN or infinity" in predict_error(model_dir, "nan.npy")


def _rgba_digit(digit: np.ndarray, ink: int) -> np.ndarray:
    """The digit as strokes of grey ``ink`` whose opacity is the pixel value."""
    rgba = np.zeros((*digit.shape, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = digit
    return rgba


def test_transparent_png_is_composited_on_a_contrasting_background(model_dir, digits):
    """Issue 8.3: a digit drawn only in the alpha channel read as a blank image.
    Dark and light strokes alike must read as the digit itself."""
    pil = pytest.importorskip("PIL.Image", reason="Pillow not installed")
    digit = digits[0][1]
    np.save(model_dir / "digit.npy", digit)
    pil.fromarray(_rgba_digit(digit, 0), "RGBA").save(model_dir / "black.png")
    pil.fromarray(_rgba_digit(digit, 255), "RGBA").save(model_dir / "white.png")
    la = np.stack([np.zeros_like(digit), digit], axis=-1)
    pil.fromarray(la, "LA").save(model_dir / "la.png")
    (reference,) = predict(model_dir, "digit.npy")
    for result in predict(model_dir, "black.png", "white.png", "la.png"):
        np.testing.assert_allclose(
            result["probabilities"], reference["probabilities"], atol=1e-5
        )


def test_bad_arrays_name_their_shape(model_dir):
    """Issue 8.14: a scalar .npy exited 1 "unexpected error"; issue 12: a 2-D
    array of the wrong shape must say its shape and the expected one."""
    np.save(model_dir / "scalar.npy", np.array(3.0))
    np.save(model_dir / "small.npy", np.zeros((20, 20)))
    np.save(model_dir / "deep.npy", np.zeros((1, 1, 28, 28)))
    np.save(model_dir / "text.npy", np.array(["seven"] * 784))
    with open(model_dir / "archive.npy", "wb") as file:  # savez would add .npz
        np.savez(file, x=np.zeros(784))
    expected = "the model expects a 28x28 image (28, 28) or (784,)"
    for name, shape in [
        ("scalar.npy", "()"),
        ("small.npy", "(20, 20)"),
        ("deep.npy", "(1, 1, 28, 28)"),
    ]:
        message = predict_error(model_dir, name)
        assert f"holds an array of shape {shape}; {expected}" in message
    assert "expected numbers, got an array of <U5" in predict_error(
        model_dir, "text.npy"
    )
    assert "is an .npz archive" in predict_error(model_dir, "archive.npy")
    # A batch of flat rows is fine.
    np.save(model_dir / "rows.npy", np.zeros((2, 784), np.uint8))
    assert len(predict(model_dir, "rows.npy")) == 2


def test_dataset_index_past_the_end(model_dir):
    message = predict_error(model_dir, "mnist-sample:99999999")
    assert "index 99999999 is past the end of the 10,000-image test set" in message


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` greyscale pixels (no data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_decompression_bomb_is_refused(model_dir, side):
    """Issue 8.14: Pillow's DecompressionBombError exited 1 "unexpected error";
    its warning (between its limit and twice it) went on to decode the image."""
    pytest.importorskip("PIL.Image", reason="Pillow not installed")
    (model_dir / "huge.png").write_bytes(_png_header(side, side))
    message = predict_error(model_dir, "huge.png")
    assert "image 'huge.png' is too large to read safely" in message
    assert "a digit needs only 28x28 pixels" in message


def test_wrong_2d_array_for_a_model_without_images_names_its_shape(tmp_path):
    """Issue 12.5: a (28, 28) array given to a model of 8 features (not trained
    on images) was flattened to 784 values and refused without its shape."""
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "flat.npz",
        x_train=rng.random((40, 8)),
        y_train=rng.integers(0, 2, 40),
        x_test=rng.random((10, 8)),
        y_test=rng.integers(0, 2, 10),
    )
    proc = run(
        "train", "--dataset", "flat.npz", "--device", "cpu", "--hidden", "4",
        "--epochs", "1", "--save", "m.npz", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    np.save(tmp_path / "square.npy", np.zeros((28, 28)))
    np.save(tmp_path / "rows.npy", np.zeros((3, 8)))
    message = predict_error(tmp_path, "square.npy")
    assert "holds an array of shape (28, 28); the model expects (8,) or n " in message
    assert "(n, 8)" in message
    assert len(predict(tmp_path, "rows.npy")) == 3
