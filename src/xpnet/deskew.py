"""Deskewing of handwritten-digit images: :func:`skew` and :func:`deskew`.

Host-side NumPy. This module owns the moment-based shear (image moments, the
bilinear row and column shifts, the cast back to the input dtype); images are
``(n, h, w)`` or flattened ``(n, h*w)``, in pixels. :mod:`xpnet.preprocessing`
re-exports both functions and uses :func:`deskew` as a pipeline step.
"""

from __future__ import annotations

import math

import numpy as np

from xpnet.errors import XpnetError

__all__ = ["deskew", "skew"]

# Rows per block in deskew (and standardize): bounds the temporaries to a few
# tens of MB.
_CHUNK = 4096


def skew(images: np.ndarray, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Slant of each image: ``alpha = cov(x, y) / var(y)`` of its intensity.

    Args:
        images: ``(n, h, w)`` or ``(n, h*w)`` non-negative intensities.
        image_shape: ``(h, w)`` when the images are flattened; default: square.

    Returns:
        ``(n,)`` float64: horizontal shift (pixels) per pixel of height. Positive
        means the stroke leans left going up (``\\``), negative leans right (``/``);
        0 for blank images.
    """
    batch = _as_batch(images, image_shape)
    return _moments(batch.astype(np.float64, copy=False))[2]


def deskew(
    images: np.ndarray,
    image_shape: tuple[int, int] | None = None,
    *,
    recentre: bool = True,
    max_shear: float = 1.0,
) -> np.ndarray:
    """Straighten slanted images (handwritten digits) with a moment-based shear.

    Deskewing appears as a preprocessing step in the results table of the MNIST
    page (LeCun, Cortes, Burges: http://yann.lecun.com/exdb/mnist/), where it
    lowers the error of most classifiers; LeCun, Bottou, Bengio and Haffner
    ("Gradient-based learning applied to document recognition", Proc. IEEE 86(11),
    1998) describe it as shearing each image, by shifting its rows horizontally,
    so that the principal axis given by the second moments of the pixels becomes
    vertical. Here the image intensity ``I(x, y)`` (``x`` = column, ``y`` = row,
    in pixels) is treated as a mass distribution:

    * centre of mass ``(cx, cy) = sum(I * (x, y)) / sum(I)``;
    * skew ``alpha = cov(x, y) / var(y)`` from the intensity-weighted second
      central moments: the least-squares slope of ``x`` regressed on ``y``, so
      the stroke's centre line is ``x ~= cx + alpha * (y - cy)``;
    * output pixel ``(x, y)`` takes the input value at
      ``(x + alpha * (y - y0) + cx - x0,  y + cy - y0)``, a horizontal shear that
      makes the fitted centre line vertical, pivoting on the image centre
      ``(x0, y0) = (w / 2, h / 2)``, combined (``recentre=True``) with the shift
      that moves the centre of mass onto the image centre. MNIST puts each
      digit's centre of mass at pixel (14, 14) = (w/2, h/2), so on MNIST the
      shift is a fraction of a pixel.
    * values between pixels are interpolated bilinearly; outside the image is 0.

    After the shear ``cov(x, y)`` is (nearly) 0. Blank images come out unchanged.

    Args:
        images: ``(n, h, w)`` or ``(n, h*w)`` intensities (uint8 pixels 0-255 or
            floats); flattened images need ``image_shape`` unless square.
        image_shape: ``(h, w)`` of flattened images.
        recentre: also move each centre of mass to the image centre; if False the
            shear pivots on the centre of mass, which stays where it is.
        max_shear: ``|alpha|`` is clipped to this (1.0 = 45 degrees), so a
            degenerate image (say a flat horizontal dash) is not smeared across.

    Returns:
        The deskewed images, same shape and dtype as ``images`` (integer types
        are rounded and clipped to their range). The arithmetic is float32,
        float64 for float64 input.
    """
    images = np.asarray(images)
    batch = _as_batch(images, image_shape)
    work = np.float64 if images.dtype == np.float64 else np.float32
    out = np.empty(batch.shape, dtype=work)
    for start in range(0, len(batch), _CHUNK):
        block = batch[start : start + _CHUNK].astype(work)
        out[start : start + _CHUNK] = _deskew_block(block, recentre, max_shear)
    return _cast_like(out, images.dtype).reshape(images.shape)


def _as_batch(images: np.ndarray, image_shape: tuple[int, int] | None) -> np.ndarray:
    """View ``images`` as ``(n, h, w)``."""
    images = np.asarray(images)
    if images.ndim == 3:
        return images
    if images.ndim != 2:
        raise XpnetError(
            f"images must be (n, height, width) or (n, height*width), got shape "
            f"{images.shape}"
        )
    n, features = images.shape
    if image_shape is None:
        side = math.isqrt(features)
        if side * side != features:
            raise XpnetError(
                f"images have {features} features, not a square image; give "
                "image_shape=(height, width)"
            )
        image_shape = (side, side)
    h, w = image_shape
    if h * w != features:
        raise XpnetError(
            f"image_shape {tuple(image_shape)} has {h * w} pixels but the images "
            f"have {features} features"
        )
    return images.reshape(n, h, w)


def _moments(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre of mass ``(cy, cx)`` and skew ``alpha`` of ``(n, h, w)`` images.

    All three are ``(n,)`` float64, in pixels. Blank images get the image centre
    and alpha 0, so they map to themselves.
    """
    _, h, w = batch.shape
    rows = np.arange(h, dtype=np.float64)
    cols = np.arange(w, dtype=np.float64)
    # The big reductions run in the input's precision; their (n, h) and (n, w)
    # results go to float64 before the cancellation-prone E[y^2] - E[y]^2.
    row_mass = batch.sum(axis=2, dtype=np.float64)  # (n, h)
    col_mass = batch.sum(axis=1, dtype=np.float64)  # (n, w)
    row_xmass = (batch @ cols.astype(batch.dtype)).astype(np.float64)  # (n, h)
    mass = row_mass.sum(axis=1)
    blank = mass <= 0
    safe = np.where(blank, 1.0, mass)
    cy = row_mass @ rows / safe
    cx = col_mass @ cols / safe
    var_y = row_mass @ (rows * rows) / safe - cy * cy
    cov_xy = row_xmass @ rows / safe - cx * cy
    # A stroke with no vertical extent has no defined slant.
    flat = var_y <= 1e-6
    alpha = np.where(blank | flat, 0.0, cov_xy / np.where(flat, 1.0, var_y))
    cy = np.where(blank, h / 2, cy)
    cx = np.where(blank, w / 2, cx)
    return cy, cx, alpha


def _deskew_block(batch: np.ndarray, recentre: bool, max_shear: float) -> np.ndarray:
    """Deskew ``(n, h, w)`` float images; see :func:`deskew` for the maths."""
    n, h, w = batch.shape
    cy, cx, alpha = _moments(batch)
    alpha = np.clip(alpha, -max_shear, max_shear)
    # The source position of output pixel (r, c) is (r + dy, c + shift[r]): the
    # column offset depends only on the row, so bilinear interpolation splits
    # into a vertical shift per image followed by a horizontal shift per row.
    if recentre:
        dy, dx = cy - h / 2, cx - w / 2
        batch = _shift_rows(batch, dy)
    else:
        dy, dx = np.zeros(n), np.zeros(n)
    src_rows = np.arange(h)[None, :] + dy[:, None]  # (n, h), input row coordinate
    shift = alpha[:, None] * (src_rows - cy[:, None]) + dx[:, None]  # (n, h)
    return _shift_cols(batch, shift)


def _shift_rows(batch: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``out[k, r] = batch[k, r + dy[k]]`` for ``(n, h, w)`` images, linearly
    interpolated; rows outside the image are zero."""
    n, h, w = batch.shape
    base = np.floor(dy)
    frac = (dy - base).astype(batch.dtype)[:, None, None]
    # Any shift beyond +-(h + 1) rows gives a blank image, so clip there and pad
    # h + 1 zero rows on each side: the indices then never leave the array.
    base = np.clip(base, -(h + 1), h).astype(np.intp)
    padded = np.zeros((n, 3 * h + 2, w), dtype=batch.dtype)
    padded[:, h + 1 : 2 * h + 1] = batch
    idx = (np.arange(n) * (3 * h + 2) + h + 1 + base)[:, None] + np.arange(h)
    flat = padded.reshape(-1, w)
    lo = flat.take(idx, axis=0)  # (n, h, w)
    hi = flat.take(idx + 1, axis=0)
    return lo + frac * (hi - lo)


def _shift_cols(batch: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``out[k, r, c] = batch[k, r, c + shift[k, r]]``, linearly interpolated;
    columns outside the image are zero."""
    n, h, w = batch.shape
    base = np.floor(shift)
    frac = (shift - base).astype(batch.dtype)[:, :, None]
    base = np.clip(base, -(w + 1), w).astype(np.intp)  # see _shift_rows
    padded = np.zeros((n, h, 3 * w + 2), dtype=batch.dtype)
    padded[:, :, w + 1 : 2 * w + 1] = batch
    row_start = np.arange(n * h).reshape(n, h) * (3 * w + 2) + w + 1 + base
    idx = row_start[:, :, None] + np.arange(w)  # (n, h, w) into the flat array
    flat = padded.reshape(-1)
    lo = flat.take(idx)
    hi = flat.take(idx + 1)
    return lo + frac * (hi - lo)


def _cast_like(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` (float) as ``dtype``; integers are rounded and clipped to their range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)
