"""Content fingerprints of bring-your-own datasets.

A file can be replaced in place (labels permuted, 600 rows replaced by 100)
and keep its name: the name alone cannot tell a resumed run or an evaluation
that the data changed. :func:`fingerprint` records each array's shape, dtype
and the SHA-256 of its bytes; :func:`changes` says, in words, what differs.
Host NumPy only (an edge module).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["ALL", "TEST", "changes", "fingerprint", "valid"]

#: the arrays compared on resume (all) and by evaluate (the test set only)
ALL = ("x_train", "y_train", "x_test", "y_test")
TEST = ("x_test", "y_test")


def fingerprint(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``{name: {"shape": [...], "dtype": str, "sha256": hex}}`` of the raw
    arrays (as loaded, before any preprocessing), JSON-ready."""
    out = {}
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        out[name] = {
            "shape": list(data.shape),
            "dtype": data.dtype.str,
            "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        }
    return out


def valid(value: Any) -> bool:
    """Whether ``value`` (from an untrusted file) is shaped as :func:`fingerprint`'s."""
    return isinstance(value, dict) and all(
        isinstance(k, str)
        and isinstance(v, dict)
        and isinstance(v.get("shape"), list)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in v["shape"])
        and isinstance(v.get("dtype"), str)
        and isinstance(v.get("sha256"), str)
        for k, v in value.items()
    )


def changes(
    saved: dict[str, Any] | None,
    now: dict[str, Any] | None,
    names: tuple[str, ...] = ALL,
) -> str | None:
    """What differs between two fingerprints, in words, or None (the same, or
    nothing recorded to compare: files saved before fingerprints, named
    datasets). Only ``names`` present in both are compared."""
    if not saved or not now:
        return None
    found = []
    for name in names:
        old, new = saved.get(name), now.get(name)
        if not old or not new:
            continue
        if old["shape"][:1] != new["shape"][:1]:
            found.append(f"{name} has {_rows(new)} rows, was {_rows(old)}")
        elif old["shape"] != new["shape"]:
            found.append(
                f"{name} is shaped {tuple(new['shape'])}, was {tuple(old['shape'])}"
            )
        elif old["dtype"] != new["dtype"]:
            found.append(f"{name} holds {new['dtype']}, was {old['dtype']}")
        elif old["sha256"] != new["sha256"]:
            what = "labels" if name.startswith("y") else "values"
            found.append(f"the {what} of {name} changed (same shape)")
    return "; ".join(found) or None


def _rows(entry: dict[str, Any]) -> str:
    shape = entry["shape"]
    return f"{shape[0]:,}" if shape else "no"
