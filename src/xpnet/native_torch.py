"""xpnet's training step on PyTorch CUDA, captured in a CUDA graph (an edge
module: it imports torch). An opt-in experiment, not the default step::

    from xpnet.native_torch import CudaGraphStep
    xpnet.training.fit(model, X, y, epochs=3, batch_size=512,
                       step=CudaGraphStep(model))

A graph replays the kernels of one step with one launch, which removes the
per-kernel launch cost that dominates small models. It can, because the step
reads nothing back from the device and writes its parameters and optimizer
state in place (their addresses never change). What a replay cannot do is
run Python: every host value the step uses is frozen at capture. So:

- only SGD with a constant learning rate (folded into the loss gradient as a
  host float at capture) is accepted; Adam's bias corrections and schedules
  change per step, and :class:`CudaGraphStep` refuses them;
- each batch shape gets its own graph (a fit has two: the full batch and the
  last, partial one), made on the shape's second step, after a first eager
  step that warms up (optimizer state, cuBLAS workspaces) on a side stream;
- inputs are copied into the graph's own buffers, and the returned outputs
  are the graph's output buffer, overwritten by the next replay (``fit``
  copies them at once).

Every step is a real update: the eager warm-up, the capture's own replay,
then one replay per call; the optimizer's update count advances by one per
call. ``bench/gpu_check.py`` checks the result against the eager step on the
device before the bench times it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .arraytypes import Array
from .errors import XpnetError
from .optimizers import SGD
from .schedules import Constant

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["CudaGraphStep", "TorchGraphs"]


class TorchGraphs:
    """How a step is captured and replayed: ``torch.cuda.CUDAGraph``.

    ``warm_up(function)`` runs ``function()`` once on a side stream;
    ``capture(function)`` records ``function()`` (its kernels do not run) and
    returns ``(replay, result)``: ``replay()`` runs the recorded kernels on the
    same buffers, ``result`` is what ``function`` returned while recording.
    """

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def warm_up(self, function: Callable[[], Any]) -> Any:
        cuda = self.torch.cuda
        side = cuda.Stream()
        side.wait_stream(cuda.current_stream())
        with cuda.stream(side):
            result = function()
        cuda.current_stream().wait_stream(side)
        return result

    def capture(self, function: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph):
            result = function()
        return graph.replay, result


class CudaGraphStep:
    """A drop-in ``step`` for :func:`xpnet.training.fit` on a torch-CUDA model.

    ``update(xb, yb)`` trains on ``xb: (batch, in_features)`` and float
    targets ``yb: (batch, outputs)`` and returns the outputs ``(batch,
    outputs)`` (the graph's buffer); ``step(xb, yb)`` also returns the batch's
    mean loss before the update, computed eagerly from those outputs.

    ``graphs``: the capture mechanism (default :class:`TorchGraphs`; anything
    with its two methods, e.g. one that re-runs the recorded function, to test
    the buffer logic where CUDA is missing).
    """

    def __init__(self, model: Sequential, graphs: Any = None) -> None:
        optimizer = model.optimizer
        if type(optimizer) is not SGD or not isinstance(optimizer.schedule, Constant):
            raise XpnetError(
                "CudaGraphStep replays frozen host values: it takes SGD with a "
                f"constant learning rate only, not {optimizer!r}"
            )
        from .training import TrainStep

        self.model = model
        self.eager = TrainStep(model)
        self.graphs = graphs if graphs is not None else TorchGraphs()
        #: batch rows -> (input buffer, target buffer, replay, output buffer)
        self.captured: dict[int, tuple[Array, Array, Callable[[], None], Array]] = {}
        self.warmed: set[int] = set()
        #: the learning rate the captured graphs replay
        self.lr = optimizer.lr

    def update(self, xb: Array, yb: Array) -> Array:
        rows = xb.shape[0]
        if self.model.optimizer.lr != self.lr:
            # A callback changed the rate (ReduceLROnPlateau): the graphs
            # replay the old one, so they are captured again.
            self.lr = self.model.optimizer.lr
            self.captured.clear()
            self.warmed.clear()
        entry = self.captured.get(rows)
        if entry is not None:
            static_x, static_y, replay, out = entry
            static_x.copy_(xb)
            static_y.copy_(yb)
            replay()
            self.model.optimizer.iterations += 1  # what the update would count
            return out
        if rows not in self.warmed:
            self.warmed.add(rows)
            return self.graphs.warm_up(lambda: self.eager.update(xb, yb))
        static_x, static_y = xb.clone(), yb.clone()
        # Recording runs the step's Python once (one update counted) and none
        # of its kernels: the replay right after is that update.
        replay, out = self.graphs.capture(lambda: self.eager.update(static_x, static_y))
        self.captured[rows] = (static_x, static_y, replay, out)
        replay()
        return out

    def __call__(self, xb: Array, yb: Array) -> tuple[Array, Array]:
        out = self.update(xb, yb)
        return self.model.loss.value(out, yb), out
