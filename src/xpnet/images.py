"""Images given to ``xpnet predict``: read safely, then laid out the way the
model's training images were made.

:func:`read_image` opens only the formats in :data:`READ_FORMATS` (Pillow
otherwise picks a decoder from the file's content, so a PostScript file named
``digit.png`` would reach Ghostscript), scales each pixel by its format's real
range (65535 for 16-bit PNGs), refuses NaN or infinite pixels and images with
no ink, and returns light strokes on black, as MNIST stores digits.

Layouts (:func:`layout_for`):

- ``"mnist"``: as MNIST was made (LeCun et al.): the ink cropped, fitted into
  a 20x20 box keeping its aspect ratio (anti-aliased), and placed in the 28x28
  field so that its centre of mass is at the field's centre.
- ``"fashion"``: as Fashion-MNIST was made: the ink cropped, its longest side
  fitted to the field, centred by its bounding box.
- ``"resize"``: the whole image resized to the model's input (datasets of
  your own, whose framing xpnet does not know).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import XpnetError
from .terminal import printable

__all__ = ["IMAGE_SUFFIXES", "READ_FORMATS", "ImageError", "layout_for", "read_image"]

#: The Pillow formats xpnet decodes; no other decoder ever sees a file.
READ_FORMATS = ("PNG", "JPEG", "PPM", "BMP", "GIF", "TIFF", "WEBP")
#: File names taken as images (anything else must be .npy or DATASET:INDEX).
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pbm", ".bmp", ".gif", ".tif",
    ".tiff", ".webp",
)  # fmt: skip

# Strokes must differ from the background by this fraction of the full range:
# below it the image is blank, constant or too faint to show a digit.
_MIN_CONTRAST = 0.1
# Pixels with at least this fraction of the strongest ink bound the crop, so
# faint noise (JPEG ringing, paper texture) does not widen it.
_CROP_LEVEL = 0.2
# Ink spanning fewer pixels than this on its longer side is a speck, not a
# digit (fitting it to 20x20 would make a confident answer out of a blob).
_MIN_INK_SIDE = 4
# MNIST's centre of mass, in pixel indices of the 28x28 field (measured on the
# test set: 13.99 and 14.00, std 0.29), and its digits' box.
_MNIST_CENTRE = 14.0
_MNIST_BOX = 20
# A picture whose shorter side has fewer pixels than this (or than the
# model's own image, if smaller) cannot show a digit: e.g. a flattened
# (784,) array saved as a 784x1 picture.
_MIN_IMAGE_SIDE = 8
# Nor one this many times wider (or taller) than the model's own images are.
_MAX_ASPECT = 8.0
# The longest side an image is worked on at (larger ones are box-reduced by
# a whole factor first), far more than a 20-pixel digit needs.
_MAX_SIDE = 1024
# Modes Pillow's reduce() takes as they are (others are converted first).
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "La", "RGBa")


class ImageError(XpnetError):
    """An image cannot be read or shows no digit; the message is one line."""


def layout_for(dataset: dict[str, Any], features: int) -> str:
    """The layout for a model of ``features`` inputs trained on the dataset
    its checkpoint records (``dataset``: its facts; see the module).

    MNIST's layout for 784-input models of ``mnist`` and ``mnist-sample``
    (and of a checkpoint without dataset facts, saved by the library, taken
    as MNIST's as :mod:`xpnet.cli.predict` does for its image shape);
    Fashion-MNIST's for ``fashion-mnist``; the plain resize for the rest.
    """
    name = str(dataset.get("name") or "")
    if features != 28 * 28:
        return "resize"
    if name in ("mnist", "mnist-sample") or not dataset:
        return "mnist"
    if name == "fashion-mnist":
        return "fashion"
    return "resize"


def read_image(path: Path, shape: tuple[int, int], layout: str) -> np.ndarray:
    """The image at ``path`` as ``(h, w)`` uint8 pixels 0-255, light ink on black.

    ``shape``: the model's image shape ``(h, w)``; ``layout``: see the module.
    Raises ImageError (one line) for unreadable files, non-finite pixels and
    images without ink.
    """
    where = repr(printable(str(path)))
    grey, alpha = _read_grey_alpha(path, shape, where)
    ink = _ink_on_black(grey, alpha, where)
    if layout == "resize":
        out = _resize(ink, shape)
    else:
        crop = _crop(ink)
        if max(crop.shape) < _MIN_INK_SIDE:
            raise ImageError(
                f"image {where} shows no digit: its ink covers only "
                f"{crop.shape[1]}x{crop.shape[0]} pixels; draw it larger"
            )
        if layout == "mnist":
            box = round(min(shape) * _MNIST_BOX / 28)
            centre = (_MNIST_CENTRE * shape[0] / 28, _MNIST_CENTRE * shape[1] / 28)
            out = _place(_fit(crop, (box, box)), shape, centre)
        else:
            out = _place(_fit(crop, shape), shape, None)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _read_grey_alpha(
    path: Path, shape: tuple[int, int], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(grey, alpha)``, float64 in [0, 1], of the image's first frame."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise ImageError(
            f"reading {where} needs Pillow: pip install 'xpnet[images]' "
            "(or pass a .npy array)"
        ) from None
    try:
        with warnings.catch_warnings():
            # Pillow's notes on odd files are not ours to print (one line);
            # its warning below twice its pixel limit is refused like the error.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=list(READ_FORMATS)) as image:
                if image.format == "JPEG" and max(image.size) > _MAX_SIDE:
                    # Decode at 1/2, 1/4 or 1/8 scale: never the full image.
                    factor = max(image.size) / _MAX_SIDE
                    w, h = image.size
                    image.draft(None, (int(w / factor), int(h / factor)))
                # Photos from phones are stored sideways with an EXIF turn.
                upright = ImageOps.exif_transpose(image)
                upright = upright if upright is not None else image
                _check_proportions(upright.size, shape, where)
                return _pixels(upright, where)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = str(exc).rstrip(".")
        raise ImageError(
            f"image {where} is too large to read safely ({reason}): scale it "
            f"down, a digit needs only {shape[1]}x{shape[0]} pixels"
        ) from None
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            f"cannot read image {where}: it is not a {', '.join(READ_FORMATS)} "
            "image (the formats xpnet reads)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        reason = printable(" ".join(str(exc).split()) or type(exc).__name__)
        raise ImageError(f"cannot read image {where}: {reason}") from None


def _check_proportions(
    size: tuple[int, int], shape: tuple[int, int], where: str
) -> None:
    """Refuse a picture of ``size`` ``(w, h)`` that is too thin to show a
    digit for a model of images ``shape`` ``(h, w)``: a side under
    ``_MIN_IMAGE_SIDE`` pixels, or proportions ``_MAX_ASPECT`` times the
    model's. Decoding a JPEG at a reduced scale keeps its proportions."""
    w, h = size
    shortest = min(_MIN_IMAGE_SIDE, *shape)
    aspect = (w / h) / (shape[1] / shape[0]) if w and h else math.inf
    if min(w, h) >= shortest and 1 / _MAX_ASPECT <= aspect <= _MAX_ASPECT:
        return
    flat = "a flattened array saved as a picture? " if min(w, h) <= 2 else ""
    raise ImageError(
        f"image {where} shows no digit: it is {w}x{h} px, and the model's "
        f"images are {shape[1]}x{shape[0]} ({flat}save it as a "
        f"{shape[1]}x{shape[0]} picture, or pass the array as a .npy file)"
    )


def _pixels(image: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels and opacity of an open Pillow image, scaled by its mode's
    real range (8-bit modes by 255, 16-bit by 65535, floats as 0-1 or 0-255),
    at most ``_MAX_SIDE`` pixels on a side (see :func:`_reduced`)."""
    mode = image.mode
    if mode == "F":
        full = np.asarray(image)  # Pillow's own float32 pixels, not a copy
        if not np.isfinite(full).all():
            bad = int((~np.isfinite(full)).sum())
            raise ImageError(
                f"image {where} has {bad:,} NaN or infinite pixels: fix or "
                "re-export it with finite values"
            )
        grey = np.asarray(_reduced(image), dtype=np.float64)
        low, high = float(grey.min()), float(grey.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"image {where} holds float pixels from {low:g} to {high:g}; "
                "expected 0-1 or 0-255: rescale it"
            )
        return grey / (1.0 if high <= 1 else 255.0), np.ones_like(grey)
    if mode.startswith("I"):  # 16-bit (I;16*), or 32-bit integers (I)
        sixteen = mode != "I" or image.format == "PNG"  # older Pillows: PNG's as I
        grey = np.asarray(_reduced(image.convert("I")), dtype=np.float64)
        low, high = float(grey.min()), float(grey.max())
        if low < 0:
            raise ImageError(
                f"image {where} has negative pixels ({low:g}): save it with "
                "pixels 0 and above"
            )
        if sixteen and 0 < high <= 255:
            raise ImageError(
                f"image {where} is 16-bit but its pixels only reach {high:g} of "
                "65535 (8-bit values in a 16-bit file?): save it as an 8-bit "
                "image, or scale it to 0-65535"
            )
        full_range = 65535 if sixteen or high <= 65535 else 2**31 - 1
        return grey / full_range, np.ones_like(grey)
    if mode in ("P", "PA"):  # palettes, with their transparency
        image = image.convert("RGBA")
    elif mode not in _REDUCIBLE:
        image = image.convert("LA")
    grey_alpha = np.asarray(_reduced(image).convert("LA"), dtype=np.float64) / 255
    return grey_alpha[..., 0], grey_alpha[..., 1]


def _reduced(image: Any) -> Any:
    """``image`` shrunk by a whole factor (box average, which anti-aliases)
    to at most ``_MAX_SIDE`` pixels on its longer side: a digit needs far
    fewer, and a 9000x9000 canvas would otherwise take gigabytes as floats."""
    factor = -(-max(image.size) // _MAX_SIDE)
    return image.reduce(factor) if factor > 1 else image


def _ink_on_black(grey: np.ndarray, alpha: np.ndarray, where: str) -> np.ndarray:
    """Ink strength in [0, 1] on a background of 0, strongest ink 1.

    Transparent parts get the colour that contrasts with the strokes'; a light
    background (the image's border, mostly) means dark ink, which is inverted.
    """
    coverage = float(alpha.sum())
    stroke = float((grey * alpha).sum()) / coverage if coverage else 0.0
    behind = 1.0 if stroke < 0.5 else 0.0
    pixels = grey * alpha + behind * (1 - alpha)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on a light page
        pixels, background = 1 - pixels, 1 - background
    contrast = float(pixels.max()) - background
    if contrast < _MIN_CONTRAST:
        raise ImageError(
            f"image {where} shows no digit: no pixel stands out from its "
            f"background by more than {max(contrast, 0):.1%} of the full range "
            f"(at least {_MIN_CONTRAST:.0%} is needed); give an image with "
            "visible strokes"
        )
    return np.clip((pixels - background) / contrast, 0, 1)


def _crop(ink: np.ndarray) -> np.ndarray:
    """The bounding box of the ink (pixels of at least ``_CROP_LEVEL``)."""
    rows = np.flatnonzero((ink >= _CROP_LEVEL).any(axis=1))
    cols = np.flatnonzero((ink >= _CROP_LEVEL).any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit(ink: np.ndarray, box: tuple[int, int]) -> np.ndarray:
    """``ink`` resized (anti-aliased) so that it fills ``box`` (h, w) on its
    longer side, keeping its aspect ratio."""
    scale = min(box[0] / ink.shape[0], box[1] / ink.shape[1])
    size = (
        min(box[0], max(1, round(ink.shape[0] * scale))),
        min(box[1], max(1, round(ink.shape[1] * scale))),
    )
    return _resize(ink, size)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``pixels`` resampled to ``size`` (h, w) with Lanczos, clipped to [0, 1]."""
    from PIL import Image

    image = Image.fromarray(pixels.astype(np.float32), mode="F")
    resized = image.resize((size[1], size[0]), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float64), 0, 1)


def _place(
    patch: np.ndarray, shape: tuple[int, int], centre: tuple[float, float] | None
) -> np.ndarray:
    """``patch`` on a black ``shape`` field, shifted by whole pixels so that its
    centre of mass is at ``centre`` (row, column), or centred by its box when
    ``centre`` is None; kept inside the field."""
    h, w = patch.shape
    if centre is None:
        top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    else:
        mass = max(float(patch.sum()), 1e-12)  # > 0: the crop holds ink
        rows = float((patch.sum(axis=1) * np.arange(h)).sum()) / mass
        cols = float((patch.sum(axis=0) * np.arange(w)).sum()) / mass
        top = min(max(round(centre[0] - rows), 0), shape[0] - h)
        left = min(max(round(centre[1] - cols), 0), shape[1] - w)
    field = np.zeros(shape)
    field[top : top + h, left : left + w] = patch
    return field
