"""NumPy's native fast paths (an edge module: it imports numpy).

Each method computes what :class:`xpnet.fastpaths.Ops` computes, faster on
NumPy:

- masks as products with a 0/1 array instead of ``where``: NumPy's ``where``
  is ~10x slower on the unpredictable masks of real activations (1.75 ms vs
  0.16 ms on 512x512, measured), and ``x * 1.0 == x`` exactly;
- row-wise max and sum over few columns (the logits of a classifier):
  NumPy reduces each row of an ``(8192, 10)`` array in its own inner loop
  (339 us for the max, 121 us for the sum, measured); one ``maximum`` per
  column (31 us, exact) and a product with a column of ones (14 us, a BLAS
  dot per row: equal to within float rounding) are ~10x faster; likewise
  the accuracy's arg-max (261 us), from the row maximum and the label's
  output;
- ``matmul``/``sum`` write straight into the flat gradient buffer (``out=``)
  instead of into a temporary that is then copied.
"""

from __future__ import annotations

import numpy as np

from .arraytypes import Array
from .fastpaths import Ops

__all__ = ["NumpyOps"]


#: row reductions loop over the columns when there are at most this many
#: (beyond, NumPy's own inner loop per row is long enough to be fast)
FEW_COLUMNS = 32
#: ... and at least this many rows (below, the loop's calls cost more)
MANY_ROWS = 128


class NumpyOps(Ops):
    name = "numpy"
    # Smaller chunks than the generic 4 MB: each is still in cache when its
    # steps read it, also while other processes share the cache (seed b128
    # under load: 1.07x -> 1.01x the NumPy floor, which gathers per step).
    gather_bytes = 1 << 20

    def row_max(self, x: Array) -> Array:
        rows, columns = x.shape
        if columns > FEW_COLUMNS or rows < MANY_ROWS:
            return np.max(x, axis=1, keepdims=True)
        out = x[:, :1].copy()
        for j in range(1, columns):
            np.maximum(out, x[:, j : j + 1], out=out)
        return out

    def row_sum(self, x: Array) -> Array:
        if x.shape[1] > FEW_COLUMNS:
            return np.sum(x, axis=1, keepdims=True)
        return x @ np.ones((x.shape[1], 1), dtype=x.dtype)

    def keep(self, x: Array, mask: Array) -> Array:
        return x * mask.astype(x.dtype)

    def relu(self, x: Array) -> Array:
        return np.maximum(x, 0.0)

    def negative_part(self, x: Array) -> Array:
        return np.minimum(x, 0.0)

    def clip(self, x: Array, low: float, high: float) -> Array:
        return np.clip(x, low, high)

    def select(self, mask: Array, a: Array | float, b: Array | float) -> Array:
        # b + m * (a - b): exactly b where the mask is 0, a to within one
        # rounding where it is 1 (the reference's where gives a exactly).
        dtype = next(v.dtype for v in (a, b) if isinstance(v, np.ndarray))
        out = mask.astype(dtype)
        out *= np.subtract(a, b, dtype=dtype)
        out += b
        return out

    def argmax_hits(self, x: Array, labels: Array) -> Array:
        if x.shape[1] > FEW_COLUMNS or x.shape[0] < MANY_ROWS:
            return super().argmax_hits(x, labels)
        top = self.row_max(x)
        is_top = x == top
        # With one maximum per row (no ties, no NaN), the arg-max is at the
        # label exactly where the label's output is that maximum.
        if int(np.count_nonzero(is_top)) != x.shape[0]:
            return super().argmax_hits(x, labels)
        at_label = np.take_along_axis(is_top, labels[:, None], axis=1)
        return np.asarray(np.count_nonzero(at_label), dtype=np.int64)

    def rows_buffer(self, rows: int, x: Array) -> Array | None:
        return np.empty((rows, x.shape[1]), dtype=x.dtype)

    def take_rows(self, x: Array, rows: Array, out: Array | None = None) -> Array:
        if out is None:
            return np.take(x, rows, axis=0)
        # mode="clip" (rows are in range anyway): with out=, the default
        # "raise" gathers into a temporary first (2x slower, measured).
        return np.take(x, rows, axis=0, out=out, mode="clip")

    def matmul_into(self, out: Array, a: Array, b: Array) -> Array:
        return np.matmul(a, b, out=out)

    def sum_rows_into(self, out: Array, x: Array) -> Array:
        return np.sum(x, axis=0, out=out)

    def flush_denormals(self, buffers: dict[str, Array]) -> None:
        for buf in buffers.values():
            tiny = np.finfo(buf.dtype).smallest_normal
            buf *= np.abs(buf) >= tiny
