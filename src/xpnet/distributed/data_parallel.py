"""What :func:`xpnet.training.fit` does differently on several ranks.

- start-up (:func:`start`): the ranks' configurations are compared (one
  :class:`DistributedError` line on every rank when they differ), then rank
  0's parameters and shuffling RNG are broadcast and checked equal;
- every step: :class:`GradientAllReduce`, the step's ``reduce_gradients``
  hook, sums the flat gradient buffer and the stop requests in one call
  (opt-in, ``comm.overlap``: :class:`OverlappedAllReduce` sums each layer's
  gradients while backward goes on; :func:`gradient_reducer` picks);
- every epoch: :func:`sum_over_ranks` adds the ranks' loss sums and hits,
  :func:`check_in_step` checks the parameters are still equal, and
  :func:`evaluate_sharded` evaluates each rank's share of the validation data.

Every collective error here is raised on all ranks alike; such exceptions
(:func:`is_collective`) end each rank normally, anything else should abort
them all (see :func:`xpnet.distributed.mpi.install_abort_hook`).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ..arraytypes import Array
from ..backend import Backend, to_numpy
from ..errors import DivergenceError, XpnetError
from ..interrupts import raise_agreed_stop, stop_request
from .communicator import Communicator
from .sharding import shard

if TYPE_CHECKING:
    from ..model import Sequential

__all__ = [
    "DistributedError",
    "GradientAllReduce",
    "OverlappedAllReduce",
    "gradient_reducer",
    "check_same",
    "evaluate_sharded",
    "is_collective",
    "start",
    "sum_over_ranks",
]

#: rows of a data set hashed for its fingerprint (plus the sum of all of it)
FINGERPRINT_ROWS = 256


class DistributedError(XpnetError):
    """The ranks of a data-parallel run disagree (raised on every rank)."""


class GradientAllReduce:
    """The step's ``reduce_gradients`` hook: one all-reduce per step of the
    flat gradient buffer ``(size,)`` with this rank's stop request folded in;
    when any rank asked to stop, every rank raises at this same step (before
    the update), see :func:`xpnet.interrupts.raise_agreed_stop`."""

    def __init__(self, comm: Communicator, backend: Backend) -> None:
        self.comm = comm
        self.backend = backend

    def __call__(self, grads: Array) -> Array:
        summed, stop = self.comm.reduce_step(grads, stop_request(), self.backend)
        raise_agreed_stop(stop)
        return summed


class OverlappedAllReduce(GradientAllReduce):
    """The opt-in overlapped hook (``comm.overlap``), in the style of PyTorch
    DDP's buckets: :meth:`on_layer`, called by backward after each layer,
    starts a non-blocking sum of that layer's gradients (one call per
    parameter: its contiguous slice of the flat buffer, reduced in place)
    while the layers below are backpropagated; the hook itself waits for them
    all, with the stop requests, before the update.

    Two ranks give bit-identical sums either way (a + b is a + b); with more
    ranks the MPI library may add in another order per message size, so
    results can differ from the one-call mode by rounding. Needs a gradient
    buffer that is a writeable NumPy array (the NumPy backend).
    """

    def __init__(self, comm: Communicator, backend: Backend, model: Sequential):
        super().__init__(comm, backend)
        params = model.parameters
        self.grads = params.grads
        if to_numpy(self.grads) is not self.grads or not params.writeable:
            # Every rank runs the same backend: all refuse alike.
            raise DistributedError(
                f"overlapped all-reduce works on the NumPy backend only (this "
                f"model runs on {backend.name}): make the communicator without "
                "overlap=True"
            )
        self.parts: dict[int, list[tuple[int, int]]] = {}
        for slot in params.slots:
            self.parts.setdefault(id(slot.layer), []).append((slot.start, slot.stop))
        self.nbytes = (params.size + 1) * self.grads.itemsize
        self.pending: list[Any] = []

    def on_layer(self, layer: Any) -> None:
        """``layer``'s gradients are final: start their sums."""
        for a, b in self.parts.get(id(layer), ()):
            self.pending.append(self.comm.start_reduce(self.grads[a:b]))
        if self.pending:
            self.comm.progress(self.pending)

    def __call__(self, grads: Array) -> Array:
        pending, self.pending = self.pending, []
        stop = self.comm.finish_reduce(pending, stop_request(), self.nbytes)
        raise_agreed_stop(stop)
        return grads


def gradient_reducer(
    comm: Communicator, model: Sequential
) -> GradientAllReduce | OverlappedAllReduce:
    """The step's hook for ``comm``: overlapped when ``comm.overlap``."""
    if comm.overlap:
        return OverlappedAllReduce(comm, model.backend, model)
    return GradientAllReduce(comm, model.backend)


def is_collective(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or the exception it replaced) is raised on every rank
    alike: a disagreement found by a collective check, divergence (decided
    from all-reduced numbers) or an agreed stop."""
    while exc is not None:
        if isinstance(exc, DistributedError | DivergenceError):
            return True
        if getattr(exc, "agreed", False):
            return True
        exc = exc.__context__
    return False


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_same(comm: Communicator, facts: dict[str, Any], fix: str) -> None:
    """Raise one :class:`DistributedError` line on every rank unless all ranks
    have the same ``facts`` (JSON-like values); ``fix`` says what to do."""
    gathered = comm.allgather(facts)
    for key, value in gathered[0].items():
        for rank, other in enumerate(gathered[1:], start=1):
            if other.get(key) != value:
                raise DistributedError(
                    f"the ranks disagree on the {key}: {_short(value)} on rank 0, "
                    f"{_short(other.get(key))} on rank {rank}; {fix}"
                )


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "shape"):
            host = to_numpy(part)
            h.update(f"{host.dtype}{host.shape}".encode())
            h.update(host.tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def data_fingerprint(model: Sequential, X: Array) -> str:
    """Shape, a hash of every ``n // FINGERPRINT_ROWS``-th row and the sum of
    ``X``: equal for equal data, cheap for large data (one read-back)."""
    n = X.shape[0]
    step = max(1, n // FINGERPRINT_ROWS)
    total = float(to_numpy(model.xp.sum(model.xp.astype(X, model.dtype))))
    return f"{tuple(X.shape)} {_digest(X[::step, ...], total)}"


def start(
    model: Sequential,
    comm: Communicator,
    facts: dict[str, Any],
) -> None:
    """Before the first step: refuse ranks whose ``facts`` (see
    :func:`training_facts`) differ, then broadcast rank 0's parameters and
    shuffling RNG and check that every rank now holds the same ones."""
    check_same(
        comm,
        facts,
        "start every rank with the same options, data and checkpoint",
    )
    params = model.parameters
    host = to_numpy(params.flat, copy=True)
    comm.bcast_array(host, root=0)
    flat = model.backend.asarray(host)
    if params.writeable:
        params.flat[...] = flat
    else:
        params.replace(flat)
    rng = model.shuffle_rng.bit_generator
    rng.state = comm.allgather(rng.state)[0]
    check_same(
        comm,
        {"parameters after the broadcast": _digest(params.flat, rng.state)},
        "the MPI broadcast did not give every rank the same values",
    )


def training_facts(
    model: Sequential,
    X: Array,
    y: Array,
    batch_size: int,
    shuffle: bool,
    validation: tuple[Array, Array] | None,
) -> dict[str, Any]:
    """What must be equal on every rank for the ranks to compute one run."""
    optimizer = model.optimizer
    state = optimizer.state()
    return {
        "architecture": f"{_layers(model)} ({_digest(model.config())[:8]})",
        "task": [model.task, model.target_ndim],
        "optimizer": repr(optimizer),
        "optimizer state": _digest(
            *(state[k] for k in sorted(state) if k != "iterations"),
            state["iterations"],
        ),
        "seed": model.seed,
        "epochs trained": model.epochs_trained,
        "batch size": batch_size,
        "shuffling": shuffle,
        "training inputs": data_fingerprint(model, X),
        "training targets": data_fingerprint(model, y),
        "validation data": None
        if validation is None
        else [data_fingerprint(model, v) for v in validation],
    }


def _layers(model: Sequential) -> str:
    """E.g. ``Dense 8x16, ReLU, Dense 16x3, CrossEntropy, float64``."""
    from ..layers import Dense

    names = [
        f"Dense {layer.in_features}x{layer.out_features}"
        if isinstance(layer, Dense)
        else type(layer).__name__
        for layer in model.layers
    ]
    return ", ".join([*names, type(model.loss).__name__, model.dtype_name])


def sum_over_ranks(comm: Communicator, values: list[float]) -> list[float]:
    """Each of ``values`` summed over the ranks, in rank order (so every rank
    gets bit-identical sums). Small and per epoch: not the step's buffer."""
    gathered = comm.allgather([float(v) for v in values])
    return [sum(column) for column in zip(*gathered, strict=True)]


def check_in_step(comm: Communicator, weight_sum: float) -> None:
    """Refuse to go on when the ranks' parameters drifted apart (their sums
    differ): the all-reduce must give every rank the same result."""
    check_same(
        comm,
        {"sum of the parameters": repr(weight_sum)},
        "the MPI library's all-reduce gave ranks different results",
    )


def evaluate_sharded(
    model: Sequential,
    comm: Communicator,
    X: Array,
    y: Array,
    labels: Array | None,
    batch_size: int,
) -> dict[str, Any]:
    """:meth:`Sequential.evaluate_prepared` over all ranks, each evaluating its
    contiguous share of the ``n`` rows; the sums are added over the ranks."""
    n = X.shape[0]
    a, b = shard(0, n, comm.rank, comm.size)
    loss_sum = hits = 0.0
    if b > a:
        part = model.evaluate_prepared(
            X[a:b, ...],
            y[a:b, ...],
            labels[a:b] if labels is not None else None,
            batch_size,
        )
        loss_sum = part["loss"] * (b - a)
        hits = round(part["accuracy"] * (b - a)) if labels is not None else 0.0
    loss_sum, hits = sum_over_ranks(comm, [loss_sum, hits])
    return {
        "loss": loss_sum / n,
        "accuracy": hits / n if labels is not None else None,
    }
