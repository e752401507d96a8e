"""The CUDA-graph steps (issue 17): xpnet's (xpnet.native_torch.CudaGraphStep)
and the bench's PyTorch peer (TorchGraphRunner), on the CPU.

CUDA graphs need CUDA. What runs here is everything around the capture: the
per-shape graphs (full and partial batches), the eager warm-up, the graph's
own input buffers, the update count, the refusals. The capture is replaced
by :class:`ReplayByRerunning`, which does what a graph does to the state
(recording runs the step's Python but none of its kernels; a replay runs the
kernels on the captured buffers and no Python) by re-running the step on the
captured buffers: a step that read its caller's batch instead of the graph's
buffer, or counted updates wrongly, gives other weights than the eager run.
On a GPU, bench/gpu_check.py compares the real capture with eager, and
tests/test_gpu_cupy.py runs it too.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.training import fit

torch = pytest.importorskip("torch")


class ReplayByRerunning:
    """A CUDA graph's effect on the CPU. ``tensors()``: every tensor a step
    writes (restored after recording: no kernel ran); ``host``: a
    ``(get, set)`` pair for host state the step's Python changes (frozen
    during replays: no Python runs); ``before``: run before each replay, e.g.
    to drop PyTorch's ``.grad`` (a backward captured with ``grad=None``
    writes the gradients on replay, an eager one would add to them)."""

    def __init__(self, tensors, host=None, before=None) -> None:
        self.tensors, self.host, self.before = tensors, host, before
        self.captures = self.replays = self.warm_ups = 0

    def warm_up(self, function):
        self.warm_ups += 1
        return function()

    def capture(self, function):
        saved = [t.detach().clone() for t in self.tensors()]
        result = function()
        with torch.no_grad():
            for tensor, value in zip(self.tensors(), saved, strict=True):
                tensor.copy_(value)
        self.captures += 1

        def replay() -> None:
            self.replays += 1
            if self.before:
                self.before()
            before = self.host[0]() if self.host else None
            new = function()
            if self.host:
                self.host[1](before)
            if result is not None:
                result.copy_(new)

        return replay, result


def _mnist_like(rows=1037, features=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)).astype(np.float32), rng.integers(
        0, classes, rows
    )


def _xpnet_state(model):
    params = model.parameters
    return lambda: [params.flat, *model.optimizer.slots.values()]


def test_issue17_cuda_graph_step_trains_as_the_eager_step():
    from xpnet.native_torch import CudaGraphStep

    X, y = _mnist_like()
    backend = xpnet.resolve("cpu", "torch")

    def model():
        return xpnet.mlp(
            [20, 16, 4], device=backend, seed=0, optimizer=xpnet.SGD(0.05, momentum=0.9)
        )

    eager = model()
    eager_history = eager.fit(X, y, epochs=3, batch_size=64)
    graphed = model()
    graphs = ReplayByRerunning(
        _xpnet_state(graphed),
        host=(
            lambda: graphed.optimizer.iterations,
            lambda v: setattr(graphed.optimizer, "iterations", v),
        ),
    )
    step = CudaGraphStep(graphed, graphs)
    history = fit(graphed, X, y, epochs=3, batch_size=64, step=step)
    # two shapes (64 and the last 13 rows), each warmed up once and captured once
    assert graphs.warm_ups == 2 and graphs.captures == 2
    assert graphs.replays == 3 * 17 - 2  # every other step of the 3 epochs
    assert graphed.optimizer.iterations == eager.optimizer.iterations == 3 * 17
    for key, value in eager.state_dict().items():
        np.testing.assert_allclose(graphed.state_dict()[key], value, rtol=1e-6)
    np.testing.assert_allclose(history["loss"], eager_history["loss"], rtol=1e-6)
    loss, out = step(
        graphed.to_device(X[:64], "float32"),
        graphed.loss.targets(graphed.to_device(y[:64]), 4),
    )
    assert out.shape == (64, 4) and float(loss) > 0


def test_issue18_cuda_graph_step_follows_a_plateau_cut():
    """A callback that lowers the rate (ReduceLROnPlateau's lr_factor) makes
    the graphs be captured again: the same numbers as the eager step."""
    from xpnet.callbacks import LambdaCallback
    from xpnet.native_torch import CudaGraphStep

    X, y = _mnist_like(rows=300)
    backend = xpnet.resolve("cpu", "torch")

    def run(step_for):
        model = xpnet.mlp(
            [20, 16, 4], device=backend, seed=0, optimizer=xpnet.SGD(0.05, momentum=0.9)
        )

        def halve(epoch, logs):
            model.optimizer.lr_factor *= 0.5

        history = fit(
            model,
            X,
            y,
            epochs=3,
            batch_size=64,
            step=step_for(model),
            callbacks=[LambdaCallback(on_epoch_end=halve)],
        )
        return model, history

    eager, eager_history = run(lambda model: None)
    graphs = []

    def graphed_step(model):
        graphs.append(
            ReplayByRerunning(
                _xpnet_state(model),
                host=(
                    lambda: model.optimizer.iterations,
                    lambda v: setattr(model.optimizer, "iterations", v),
                ),
            )
        )
        return CudaGraphStep(model, graphs[0])

    graphed, history = run(graphed_step)
    assert history["lr"] == eager_history["lr"] == [0.05, 0.025, 0.0125]
    # The 64-row shape, captured again for each rate (the 44 rows of the last
    # batch are only ever warmed up: once per epoch).
    assert graphs[0].captures == 3
    for key, value in eager.state_dict().items():
        np.testing.assert_allclose(graphed.state_dict()[key], value, rtol=1e-6)


@pytest.mark.parametrize(
    "optimizer",
    [
        xpnet.Adam(1e-3),
        xpnet.SGD(xpnet.schedules.StepDecay(0.1, step_size=5), momentum=0.9),
    ],
)
def test_issue17_cuda_graph_step_refuses_what_a_replay_cannot_do(optimizer):
    from xpnet.native_torch import CudaGraphStep

    model = xpnet.mlp([4, 3], device=xpnet.resolve("cpu", "torch"), optimizer=optimizer)
    with pytest.raises(xpnet.XpnetError, match="SGD with a constant learning rate"):
        CudaGraphStep(model, ReplayByRerunning(list))


def test_issue17_torch_graph_peer_trains_as_pytorch_eager():
    from xpnet.bench import runners

    X, y = _mnist_like(rows=600, features=784, classes=10)
    sizes = (784, 16, 10)
    backend = xpnet.resolve("cpu")
    state = runners.XpnetRunner(sizes, X, y, 64, backend).initial_state()
    eager = runners.TorchRunner(sizes, X, y, 64, "cpu", state)
    graphed = runners.TorchGraphRunner(sizes, X, y, 64, "cpu", state)

    def written():
        moments = [s["momentum_buffer"] for s in graphed.opt.state.values()]
        return [*graphed.net.parameters(), *moments, graphed.total]

    graphed.graphs = ReplayByRerunning(
        written, before=lambda: graphed.opt.zero_grad(set_to_none=True)
    )
    losses = [(eager.run_epoch(), graphed.run_epoch()) for _ in range(3)]
    eager_losses, graphed_losses = zip(*losses, strict=True)
    np.testing.assert_allclose(graphed_losses, eager_losses, rtol=1e-5)
    assert graphed.graphs.captures == 2  # 64 rows and the last 24
    assert graphed.graphs.replays == 3 * 10 - 2
    for a, b in zip(eager.net.parameters(), graphed.net.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5)
