"""Issue 16, items 17-20: images given to ``xpnet predict`` (16-bit range,
non-finite and ink-less images, MNIST's layout, only the formats xpnet reads)
and control characters from files on the terminal.

Everything runs the real CLI (a subprocess of the console script) on a model
trained on the bundled sample; the digits are real MNIST test digits."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from conftest import MNIST_DIR
from test_cli import last_json, one_line_error, run

from xpnet.idx import read_idx

Image = pytest.importorskip("PIL.Image", reason="Pillow not installed")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A checkpoint trained on mnist-sample (raw pixels scaled by 1/255)."""
    tmp = tmp_path_factory.mktemp("issue16_images")
    proc = run(
        "train", "--dataset", "mnist-sample", "--device", "cpu", "--hidden", "32",
        "--epochs", "2", "--save", "m.npz", "--quiet", cwd=tmp,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return tmp


@pytest.fixture(scope="module")
def test_digits():
    """The first 200 real MNIST test digits, (200, 28, 28) uint8, and labels."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"real MNIST files not found at {MNIST_DIR}")
    images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:200]
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")[:200]
    return images, labels.astype(np.int64)


def predict(cwd, *inputs: str, env: dict[str, str] | None = None) -> list[dict]:
    proc = run(
        "predict", "m.npz", *inputs, "--device", "cpu", "--json", cwd=cwd, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return last_json(proc.stdout)["results"]


def predict_error(cwd, *inputs: str) -> str:
    proc = run("predict", "m.npz", *inputs, "--device", "cpu", cwd=cwd)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return one_line_error(proc)


def _save_all(directory, prefix: str, images, **save) -> list[str]:
    names = []
    for i, image in enumerate(images):
        name = f"{prefix}{i}.png"
        Image.fromarray(image).save(directory / name, **save)
        names.append(name)
    return names


def test_issue16_item17_sixteen_bit_png_reads_as_its_8_bit_original(
    model_dir, test_digits
):
    """Item 17: 16-bit PNGs were clipped at 255 of 65535 (22 of 30 digits
    predicted differently from the 8-bit file): the same digit at 16 bits must
    give the 8-bit file's answer."""
    images = test_digits[0][:30]
    eight = _save_all(model_dir, "u8_", images)
    sixteen = _save_all(model_dir, "u16_", images.astype(np.uint16) * 257)
    assert Image.open(model_dir / sixteen[0]).mode.startswith("I")
    results = predict(model_dir, *eight, *sixteen)
    by8, by16 = results[:30], results[30:]
    assert [r["prediction"] for r in by16] == [r["prediction"] for r in by8]
    np.testing.assert_allclose(
        [r["probabilities"] for r in by16],
        [r["probabilities"] for r in by8],
        atol=1e-5,
    )
    # 8-bit values written into a 16-bit file show nothing at 16 bits: said so.
    Image.fromarray(images[0].astype(np.uint16)).save(model_dir / "low16.png")
    message = predict_error(model_dir, "low16.png")
    assert "'low16.png' is 16-bit but its pixels only reach 255 of 65535" in message


def test_issue16_item17_non_finite_float_tiff_is_refused(model_dir, test_digits):
    """Item 17: NaN pixels in a float TIFF were accepted; a finite float TIFF
    in [0, 1] reads as its 8-bit original."""
    digit = test_digits[0][0]
    Image.fromarray(digit).save(model_dir / "plain.png")
    Image.fromarray((digit / 255).astype(np.float32)).save(model_dir / "unit.tiff")
    plain, unit = predict(model_dir, "plain.png", "unit.tiff")
    np.testing.assert_allclose(unit["probabilities"], plain["probabilities"], atol=1e-5)
    for bad in (np.nan, np.inf):
        pixels = (digit / 255).astype(np.float32)
        pixels[3, 4] = bad
        Image.fromarray(pixels).save(model_dir / "bad.tiff")
        message = predict_error(model_dir, "bad.tiff")
        assert "'bad.tiff' has 1 NaN or infinite pixels" in message


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((40, 30), np.uint8),  # black
        np.full((40, 30), 255, np.uint8),  # white page
        np.full((40, 30), 128, np.uint8),  # grey
        np.full((40, 30), 250, np.uint8) - np.eye(40, 30, dtype=np.uint8) * 6,
    ],
    ids=["black", "white", "grey", "faint"],
)
def test_issue16_item17_blank_or_constant_image_is_refused(model_dir, pixels):
    """Item 17: a blank or constant image got "looks like a 5" with exit 0."""
    Image.fromarray(pixels).save(model_dir / "blank.png")
    message = predict_error(model_dir, "blank.png")
    assert "image 'blank.png' shows no digit" in message


def test_issue16_item17_a_speck_is_not_a_digit(model_dir):
    """Item 17: a single dot was fitted into 20x20 and answered "an 8,
    p=0.99"; ink this small is refused like a blank image."""
    speck = np.full((60, 60), 255, np.uint8)
    speck[30:32, 20:22] = 0
    Image.fromarray(speck).save(model_dir / "speck.png")
    message = predict_error(model_dir, "speck.png")
    assert "'speck.png' shows no digit: its ink covers only 2x2 pixels" in message


def test_item21_flattened_or_extremely_thin_pictures_are_refused(
    model_dir, test_digits
):
    """Review item 21: a (784,) digit saved as a 1x784 picture was read
    without complaint ("looks like a 5, p=0.17"); pictures far thinner than
    the model's 28x28 are refused, naming their size. A digit on a merely
    oblong canvas is still read."""
    digits, labels = test_digits
    Image.fromarray(digits[0].reshape(784)).save(model_dir / "flat.png")
    message = predict_error(model_dir, "flat.png")
    assert "image 'flat.png' shows no digit: it is 1x784 px" in message
    assert "flattened array" in message
    Image.fromarray(digits[0].reshape(1, 784)).save(model_dir / "row.png")
    assert "it is 784x1 px" in predict_error(model_dir, "row.png")
    strip = np.zeros((28, 300), np.uint8)
    strip[:, 100:128] = digits[0]
    Image.fromarray(strip).save(model_dir / "strip.png")
    assert "it is 300x28 px" in predict_error(model_dir, "strip.png")
    oblong = np.zeros((28, 84), np.uint8)
    oblong[:, 28:56] = digits[0]
    Image.fromarray(oblong).save(model_dir / "oblong.png")
    (result,) = predict(model_dir, "oblong.png")
    assert result["prediction"] == labels[0]


def test_issue16_item18_photos_are_read_upright_and_in_colour(model_dir, test_digits):
    """Item 18, as a photo comes: a JPEG stored sideways with an EXIF turn,
    and a palette image, read as the upright grey digit does."""
    images, _ = test_digits
    page = Image.fromarray(255 - images[0]).resize((140, 140))
    page.convert("RGB").save(model_dir / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    sideways = page.transpose(Image.Transpose.ROTATE_90).convert("RGB")
    sideways.save(model_dir / "sideways.jpg", quality=95, exif=exif)
    page.convert("P").save(model_dir / "palette.gif")
    upright, turned, palette = predict(
        model_dir, "upright.jpg", "sideways.jpg", "palette.gif"
    )
    for other in (turned, palette):
        assert other["prediction"] == upright["prediction"]
        np.testing.assert_allclose(
            other["probabilities"], upright["probabilities"], atol=0.05
        )


def _on_canvas(digit, scale: int, top: int, left: int, side: int = 160):
    """``digit`` enlarged ``scale`` times (bicubic) on a black ``side`` square."""
    image = Image.fromarray(digit)
    if scale != 1:
        image = image.resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    patch = np.asarray(image)
    canvas = np.zeros((side, side), np.uint8)
    canvas[top : top + len(patch), left : left + len(patch)] = patch
    return canvas


def test_issue16_item18_digits_small_large_and_off_centre_on_big_canvases(
    model_dir, test_digits
):
    """Item 18: images are laid out as MNIST was made (ink cropped, fitted to
    20x20, centre of mass at the centre, dark ink on a light page inverted):
    real test digits small, large, off-centre or dark on a big canvas must be
    classified within 2 points of the centred digits' accuracy."""
    images, labels = test_digits
    np.save(model_dir / "centred.npy", images)
    rng = np.random.default_rng(0)
    variants = {
        "small": [_on_canvas(d, 1, *rng.integers(0, 132, 2)) for d in images],
        "large": [_on_canvas(d, 5, 10, 10) for d in images],
        "corner": [_on_canvas(d, 2, 101, 3) for d in images],
        "dark_on_light": [255 - _on_canvas(d, 3, 40, 60) for d in images],
    }
    names = {k: _save_all(model_dir, k, v) for k, v in variants.items()}
    inputs = ["centred.npy", *(n for k in variants for n in names[k])]
    predicted = np.array([r["prediction"] for r in predict(model_dir, *inputs)])
    centred = float(np.mean(predicted[:200] == labels))
    assert centred > 0.85
    for i, variant in enumerate(variants):
        chunk = predicted[200 * (i + 1) : 200 * (i + 2)]
        accuracy = float(np.mean(chunk == labels))
        assert accuracy >= centred - 0.02, (variant, accuracy, centred)


_POSTSCRIPT = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 28 28
newpath 4 4 moveto 24 24 lineto stroke
showpage
"""


def test_issue16_item19_postscript_named_png_never_reaches_ghostscript(
    model_dir, tmp_path
):
    """Item 19: Pillow picked the decoder from the content, so a PostScript
    file named digit.png ran Ghostscript. A ``gs`` first on PATH records
    whether it is ever started."""
    marker = tmp_path / "gs-was-run"
    fake_gs = tmp_path / "bin" / "gs"
    fake_gs.parent.mkdir()
    fake_gs.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    fake_gs.chmod(fake_gs.stat().st_mode | stat.S_IXUSR)
    (model_dir / "digit.png").write_bytes(_POSTSCRIPT)
    env = {"PATH": f"{fake_gs.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = run(
        "predict", "m.npz", "digit.png", "--device", "cpu", cwd=model_dir, env=env
    )
    assert not marker.exists(), f"Ghostscript was run: {marker.read_text()}"
    assert proc.returncode == 2
    assert "'digit.png': it is not a PNG, JPEG, PPM, BMP, GIF, TIFF, WEBP image" in (
        one_line_error(proc)
    )


_EVIL = ["\x1b[2J", "\nxpnet: error: forged", "ok", "\u202eevil", "3", "4", "5"]


def test_issue16_item20_control_characters_from_files_are_shown_escaped(tmp_path):
    """Item 20: class names and dataset names from files were printed raw
    (``\\x1b[2J`` cleared the screen, a newline forged an error line). Every
    line on the terminal shows them escaped; JSON escapes them as JSON."""
    rng = np.random.default_rng(0)
    name = "data\x1b]0;title\x07"
    np.savez(
        tmp_path / f"{name}.npz",
        x_train=rng.integers(0, 256, (70, 784), dtype=np.uint8),
        y_train=np.arange(70) % 7,
        x_test=rng.integers(0, 256, (14, 784), dtype=np.uint8),
        y_test=np.arange(14) % 7,
        class_names=np.array(_EVIL),
    )
    train = run(
        "train", "--dataset", f"{name}.npz", "--device", "cpu", "--hidden", "8",
        "--epochs", "1", "--save", "m.npz", cwd=tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    Image.fromarray(_on_canvas(np.eye(28, dtype=np.uint8) * 255, 1, 0, 0, 28)).save(
        tmp_path / "x.png"
    )
    shown = [train]
    shown.append(run("predict", "m.npz", "x.png", "--device", "cpu", cwd=tmp_path))
    shown.append(run("evaluate", "m.npz", "--device", "cpu", cwd=tmp_path))
    # An error naming the dataset (the recorded file is gone).
    os.rename(tmp_path / f"{name}.npz", tmp_path / "moved.npz")
    missing = run("evaluate", "m.npz", "--device", "cpu", cwd=tmp_path)
    assert missing.returncode == 2
    assert "\\x1b]0;title\\x07" in one_line_error(missing)
    shown.append(missing)
    for proc in shown:
        text = proc.stdout + proc.stderr
        assert not any(c in text for c in "\x1b\x07\u202e"), text
        assert "\nxpnet: error: forged" not in text
    predicted = shown[1].stdout
    assert "\\x1b[2J" in predicted or "\\nxpnet: error: forged" in predicted
    assert "data\\x1b]0;title\\x07" in shown[0].stdout
    as_json = run(
        "predict", "m.npz", "x.png", "--device", "cpu", "--json", cwd=tmp_path
    )
    assert last_json(as_json.stdout)["results"][0]["class_name"] in _EVIL


@pytest.mark.parametrize(
    "facts,features,layout",
    [
        ({"name": "mnist", "image_shape": [28, 28]}, 784, "mnist"),
        ({"name": "mnist-sample", "image_shape": [28, 28]}, 784, "mnist"),
        ({}, 784, "mnist"),  # saved by the library: taken as MNIST's
        ({"name": "fashion-mnist", "image_shape": [28, 28]}, 784, "fashion"),
        ({"name": "mnist_letters", "image_shape": [28, 28]}, 784, "resize"),
        ({"name": "mnist", "image_shape": [8, 8]}, 64, "resize"),
    ],
)
def test_issue16_item18_layout_follows_the_recorded_dataset(facts, features, layout):
    """Item 18: MNIST's layout is for MNIST models; datasets of your own keep
    the plain resize (their framing is unknown)."""
    from xpnet.images import layout_for

    assert layout_for(facts, features) == layout


def test_issue16_item20_printable_escapes_only_what_moves_the_terminal():
    from xpnet.terminal import printable

    assert (
        printable("plain 7, Ünïcode ✓ and C:\\path")
        == "plain 7, Ünïcode ✓ and C:\\path"
    )
    assert printable("\x1b[2J\nxpnet: error: x\t\u202e\x7f\x85") == (
        "\\x1b[2J\\nxpnet: error: x\\t\\u202e\\x7f\\x85"
    )
    assert printable(printable("\x1b")) == "\\x1b"
