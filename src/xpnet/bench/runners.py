"""The systems under test: xpnet, PyTorch eager, scikit-learn, a hand-written
NumPy loop and a jitted JAX step, each wrapped as a :class:`Runner` that trains
one model on one device, one epoch per call.

Every runner starts from xpnet's initial weights and uses SGD with momentum
0.9 at a constant learning rate in float32. PyTorch, scikit-learn and JAX are
imported only when their runner is built.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend as _backend
from ..backend import Backend
from ..errors import XpnetError
from .peers import peer_skip_reason, pin_jax_threads
from .plan import CLASSES, DEFAULT_PEERS, DTYPE, LR, MOMENTUM, PEERS, SEED

#: host copies of a model's parameters, keyed like ``Sequential.state_dict()``
State = dict[str, np.ndarray]


class Runner:
    """One system ready to train one model on one device.

    ``run_epoch()`` trains one epoch (synchronising the device) and returns the
    epoch's mean training loss as a float. After :meth:`close` the runner is
    spent.
    """

    system: str = "?"

    def run_epoch(self) -> float:
        raise NotImplementedError

    def initial_state(self) -> State:
        """The starting weights, for the peers to copy (only xpnet has them)."""
        raise NotImplementedError(f"{self.system} does not provide initial weights")

    def optimizer_denormal_fraction(self) -> float:
        """Share of the optimizer state's values that are float denormals."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop references to large buffers."""


class XpnetRunner(Runner):
    """xpnet's own ``Sequential.fit(X, y, epochs=1, batch_size=b)``.

    The data is validated once, when it is put on the device; each timed
    epoch then calls ``fit(..., check_inputs=False)``, as a training run that
    calls ``fit`` once for many epochs pays that scan once, not per epoch.
    """

    system = "xpnet"

    def __init__(
        self,
        sizes: Sequence[int],
        X: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        backend: Backend,
        lr: float = LR,
        seed: int = SEED,
    ):
        import xpnet

        self.backend = backend
        self.model = xpnet.mlp(
            list(sizes),
            activation="relu",
            device=backend,
            seed=seed,
            dtype=DTYPE,
            optimizer=xpnet.SGD(lr=lr, momentum=MOMENTUM),
        )
        self.X: Any = self.model.prepare_inputs(X)
        self.y: Any = self.model.prepare_targets(y, self.X.shape[0])[0]
        self.batch_size = int(batch_size)
        self.loop_seconds: list[float] = []

    def initial_state(self) -> State:
        return self.model.state_dict()

    def _fit(self) -> Any:
        return self.model.fit(
            self.X, self.y, epochs=1, batch_size=self.batch_size, check_inputs=False
        )

    def run_epoch(self) -> float:
        history = self._fit()
        self.backend.synchronize()
        self.loop_seconds.append(float(history["seconds"][-1]))
        return float(history["loss"][-1])

    def input_check_seconds(self, repeats: int = 3) -> float:
        """Median time of fit's input preparation (``prepare_inputs`` and
        ``prepare_targets``)."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            X = self.model.prepare_inputs(self.X)
            self.model.prepare_targets(self.y, X.shape[0])
            self.backend.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def optimizer_denormal_fraction(self) -> float:
        slots = [_backend.to_numpy(b) for b in self.model.optimizer.slots.values()]
        return denormal_fraction(slots)

    def close(self) -> None:
        del self.X, self.y, self.model


class TorchRunner(Runner):
    """PyTorch eager: ``nn.Sequential`` + ``optim.SGD`` + ``F.cross_entropy``."""

    system = "pytorch"

    def __init__(
        self,
        sizes: Sequence[int],
        X: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        device: str,
        state: State,
        lr: float = LR,
        seed: int = SEED,
    ):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        layers: list[torch.nn.Module] = []
        dense = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            lin = torch.nn.Linear(a, b)
            dense.append(lin)
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        with torch.no_grad():
            for i, lin in enumerate(dense):
                lin.weight.copy_(torch.from_numpy(state[f"{2 * i}.W"].T.copy()))
                lin.bias.copy_(torch.from_numpy(state[f"{2 * i}.b"]))
        self.net.to(device=self.device, dtype=torch.float32)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=MOMENTUM)
        self.X = torch.from_numpy(X).to(self.device)
        self.y = torch.from_numpy(y).to(self.device)
        self.n = int(X.shape[0])
        self.batch_size = int(batch_size)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def run_epoch(self) -> float:
        torch, n, b = self.torch, self.n, self.batch_size
        F = torch.nn.functional
        perm = torch.randperm(n, device=self.device, generator=self.gen)
        total = torch.zeros((), device=self.device)
        for lo in range(0, n, b):
            idx = perm[lo : lo + b]
            xb, yb = self.X[idx], self.y[idx]
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.net(xb), yb)
            loss.backward()
            self.opt.step()
            total += loss.detach() * idx.shape[0]
        mean = float(total) / n  # one read-back per epoch, as in xpnet
        self.synchronize()
        return mean

    def optimizer_denormal_fraction(self) -> float:
        bufs = [
            s["momentum_buffer"].detach().cpu().numpy()
            for s in self.opt.state.values()
            if s.get("momentum_buffer") is not None
        ]
        return denormal_fraction(bufs)

    def close(self) -> None:
        del self.X, self.y, self.net, self.opt


class XpnetGraphRunner(XpnetRunner):
    """xpnet on the torch-CUDA backend with its step captured in a CUDA graph
    (:class:`xpnet.native_torch.CudaGraphStep`, one graph per batch shape,
    made in the warm-up epoch): an experiment, timed only when asked for."""

    system = "xpnet-graph"

    def __init__(
        self,
        sizes: Sequence[int],
        X: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        device: str,
        state: State,
        lr: float = LR,
        seed: int = SEED,
    ):
        from ..native_torch import CudaGraphStep

        torch_backend = _backend.resolve(device, "torch")
        super().__init__(sizes, X, y, batch_size, torch_backend, lr=lr, seed=seed)
        self.model.load_state_dict(state)
        self.step = CudaGraphStep(self.model)

    def _fit(self) -> Any:
        from ..training import fit

        return fit(
            self.model,
            self.X,
            self.y,
            epochs=1,
            batch_size=self.batch_size,
            check_inputs=False,
            step=self.step,
        )


class TorchGraphRunner(TorchRunner):
    """PyTorch with its whole training step (gather, forward, loss, backward,
    ``optimizer.step()``) captured in a CUDA graph, as PyTorch's CUDA-graph
    recipe does: one graph per batch shape (the full batch and the last,
    partial one), each made in the warm-up epoch after one eager step on a
    side stream, then one ``replay()`` per step. The batch's indices are
    copied into the graph's index buffer; the epoch's summed loss stays in a
    buffer of the graph and is read once per epoch."""

    system = "pytorch-graph"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from ..native_torch import TorchGraphs

        self.graphs = TorchGraphs()
        self.total = self.torch.zeros((), device=self.device)
        #: rows -> (index buffer, replay)
        self.captured: dict[int, tuple[Any, Any]] = {}
        self.warmed: set[int] = set()

    def _step(self, idx: Any) -> None:
        F = self.torch.nn.functional
        loss = F.cross_entropy(self.net(self.X[idx]), self.y[idx])
        loss.backward()
        self.opt.step()
        self.total.add_(loss.detach() * idx.shape[0])

    def run_epoch(self) -> float:
        n, b = self.n, self.batch_size
        perm = self.torch.randperm(n, device=self.device, generator=self.gen)
        self.total.zero_()
        for lo in range(0, n, b):
            idx = perm[lo : lo + b]
            rows = int(idx.shape[0])
            if rows in self.captured:
                static_idx, replay = self.captured[rows]
                static_idx.copy_(idx)
                replay()
                continue
            self.opt.zero_grad(set_to_none=True)
            if rows not in self.warmed:
                self.warmed.add(rows)
                self.graphs.warm_up(functools.partial(self._step, idx))
                continue
            static_idx = idx.clone()
            replay, _ = self.graphs.capture(functools.partial(self._step, static_idx))
            self.captured[rows] = (static_idx, replay)
            replay()
        mean = float(self.total) / n
        self.synchronize()
        return mean


class SklearnRunner(Runner):
    """scikit-learn ``MLPClassifier``: one ``partial_fit(X, y)`` per epoch.

    ``partial_fit`` runs ``_fit(incremental=True)``, whose stochastic solver makes
    one pass over ``gen_batches(n, batch_size)`` (last partial batch included),
    shuffling the indices first, and then leaves the epoch loop ("if
    incremental: break"); the optimizer (and its velocities) is created only on
    the first call. That first call, on a few rows, happens here, outside the
    timing; then the initial weights are copied in and the velocities zeroed.
    """

    system = "sklearn"

    def __init__(
        self,
        sizes: Sequence[int],
        X: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        state: State,
        lr: float = LR,
        seed: int = SEED,
    ):
        import warnings

        from sklearn.neural_network import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            MLPClassifier,
        )

        self.X, self.y = X, y
        self.clf = MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]),
            activation="relu",
            solver="sgd",
            alpha=0.0,
            batch_size=int(batch_size),
            learning_rate="constant",
            learning_rate_init=lr,
            momentum=MOMENTUM,
            nesterovs_momentum=False,
            shuffle=True,
            # A RandomState instance (not an int) so that each partial_fit call
            # draws a fresh permutation instead of re-seeding the same one.
            random_state=np.random.RandomState(seed),
        )
        first = min(len(X), int(batch_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.partial_fit(X[:first], y[:first], classes=np.arange(CLASSES))
        n_dense = len(sizes) - 1
        for i in range(n_dense):
            self.clf.coefs_[i][...] = state[f"{2 * i}.W"]
            self.clf.intercepts_[i][...] = state[f"{2 * i}.b"]
        # scikit-learn has no public handle on the SGD velocities
        opt = self.clf._optimizer
        opt.velocities = [np.zeros_like(v) for v in opt.velocities]
        if self.clf.coefs_[0].dtype != np.float32:
            raise XpnetError("scikit-learn did not keep float32 weights")

    def run_epoch(self) -> float:
        self.clf.partial_fit(self.X, self.y)
        return float(self.clf.loss_)

    def optimizer_denormal_fraction(self) -> float:
        return denormal_fraction(self.clf._optimizer.velocities)

    def close(self) -> None:
        del self.clf, self.X, self.y


def _dense_state(state: State, layers: int) -> tuple[list[np.ndarray], ...]:
    """Float32 copies of the ``layers`` weights ``(in, out)`` and biases ``(out,)``."""
    Ws = [np.array(state[f"{2 * i}.W"], dtype=np.float32) for i in range(layers)]
    bs = [np.array(state[f"{2 * i}.b"], dtype=np.float32) for i in range(layers)]
    return Ws, bs


class NumpyRunner(Runner):
    """The NumPy floor: the loop a NumPy user writes by hand, no xpnet code.

    float32; per step a fancy-index gather ``X[idx], y[idx]`` of a fresh
    per-epoch permutation; forward ``h = x @ W; h += b`` with in-place ReLU;
    in-place softmax; the fused cross-entropy gradient ``(p - onehot) / b``
    (written as ``p[rows, y] -= 1; p /= b``); backward with ReLU masks applied
    by multiplication; momentum ``v *= mu; v += g; w -= lr * v`` in place.
    """

    system = "numpy"

    def __init__(
        self,
        sizes: Sequence[int],
        X: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        state: State,
        lr: float = LR,
        seed: int = SEED,
    ):
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.y = np.asarray(y, dtype=np.int64)
        self.W, self.b = _dense_state(state, len(sizes) - 1)
        self.vW = [np.zeros_like(w) for w in self.W]
        self.vb = [np.zeros_like(b) for b in self.b]
        self.lr, self.mu = np.float32(lr), np.float32(MOMENTUM)
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.rows = np.arange(self.batch_size)

    def train_step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        """One SGD-momentum step on ``xb (m, d0)``, labels ``yb (m,)``; returns
        the batch's summed loss (nats)."""
        W, b, last = self.W, self.b, len(self.W) - 1
        acts = [xb]
        h = xb
        for i in range(last + 1):
            h = h @ W[i]
            h += b[i]
            if i < last:
                np.maximum(h, 0, out=h)
            acts.append(h)
        p = h
        p -= p.max(axis=1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=1, keepdims=True)
        m = xb.shape[0]
        rows = self.rows[:m] if m <= len(self.rows) else np.arange(m)
        loss = -float(np.log(p[rows, yb]).sum())
        p[rows, yb] -= 1.0  # p - onehot
        p /= np.float32(m)
        g = p
        for i in range(last, -1, -1):
            gW = acts[i].T @ g
            gb = g.sum(axis=0)
            if i > 0:
                # input gradient with the old weights, then the ReLU mask
                g = g @ W[i].T
                g *= acts[i] > 0
            for w, v, grad in ((W[i], self.vW[i], gW), (b[i], self.vb[i], gb)):
                v *= self.mu
                v += grad
                w -= self.lr * v
        return loss

    def run_epoch(self) -> float:
        n, bs = self.X.shape[0], self.batch_size
        perm = self.rng.permutation(n)
        total = 0.0
        for lo in range(0, n, bs):
            idx = perm[lo : lo + bs]
            total += self.train_step(self.X[idx], self.y[idx])
        return total / n

    def weights(self) -> State:
        """Current parameters, keyed like ``Sequential.state_dict()``."""
        out: State = {}
        for i, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
            out[f"{2 * i}.W"], out[f"{2 * i}.b"] = w.copy(), b.copy()
        return out

    def optimizer_denormal_fraction(self) -> float:
        return denormal_fraction(self.vW + self.vb)

    def close(self) -> None:
        del self.X, self.y, self.W, self.b, self.vW, self.vb


class JaxRunner(Runner):
    """A jitted JAX step: gather, forward, ``jax.grad`` of the softmax
    cross-entropy and the momentum update, all in one ``jax.jit``, float32.

    The epoch's permutation is drawn on the host and put on the device once;
    each step slices it inside the jitted function (``lax.dynamic_slice``),
    so one call per step. The last partial batch has its own shape and thus
    its own compilation (done in the warm-up epoch). The summed loss is
    carried through the steps and read once per epoch.
    """

    system = "jax"

    def __init__(
        self,
        sizes: Sequence[int],
        X: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        state: State,
        lr: float = LR,
        seed: int = SEED,
        worker: bool = False,
    ):
        self.threads = pin_jax_threads(worker)
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        cpu = jax.devices("cpu")[0]
        Ws, bs = _dense_state(state, len(sizes) - 1)
        put = lambda a: jax.device_put(a, cpu)  # noqa: E731
        self.params = [(put(w), put(b)) for w, b in zip(Ws, bs, strict=True)]
        self.vel = jax.tree_util.tree_map(jnp.zeros_like, self.params)
        self.X, self.y = put(np.asarray(X, np.float32)), put(np.asarray(y, np.int32))
        self.n, self.batch_size = int(X.shape[0]), int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.device = cpu
        mu, rate = np.float32(MOMENTUM), np.float32(lr)

        def loss_fn(params: Any, xb: Any, yb: Any) -> Any:
            h = xb
            for i, (w, b) in enumerate(params):
                h = h @ w + b
                if i < len(params) - 1:
                    h = jax.nn.relu(h)
            logp = jax.nn.log_softmax(h)
            return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

        def step(
            params: Any,
            vel: Any,
            total: Any,
            X: Any,
            y: Any,
            perm: Any,
            lo: Any,
            size: int,
        ) -> tuple[Any, Any, Any]:
            idx = jax.lax.dynamic_slice(perm, (lo,), (size,))
            loss, grads = jax.value_and_grad(loss_fn)(params, X[idx], y[idx])
            vel = jax.tree_util.tree_map(lambda v, g: mu * v + g, vel, grads)
            params = jax.tree_util.tree_map(lambda p, v: p - rate * v, params, vel)
            return params, vel, total + loss * size

        self._step = jax.jit(step, static_argnums=(7,), donate_argnums=(0, 1, 2))

    def _run(self, X: Any, y: Any, perm: Any, n: int) -> Any:
        total = self.jnp.zeros((), self.jnp.float32)
        for lo in range(0, n, self.batch_size):
            size = min(self.batch_size, n - lo)
            self.params, self.vel, total = self._step(
                self.params, self.vel, total, X, y, perm, lo, size
            )
        return total

    def train_step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        """One step on the whole of ``xb (m, d0)``, ``yb (m,)``; returns the
        batch's summed loss."""
        m, saved = int(xb.shape[0]), self.batch_size
        self.batch_size = m
        try:
            put = lambda a: self.jax.device_put(a, self.device)  # noqa: E731
            perm = put(np.arange(m, dtype=np.int32))
            X, y = put(np.asarray(xb, np.float32)), put(np.asarray(yb, np.int32))
            return float(self._run(X, y, perm, m))
        finally:
            self.batch_size = saved

    def run_epoch(self) -> float:
        perm = self.rng.permutation(self.n).astype(np.int32)
        total = self._run(
            self.X, self.y, self.jax.device_put(perm, self.device), self.n
        )
        return float(total) / self.n  # waits for the last step

    def weights(self) -> State:
        """Current parameters, keyed like ``Sequential.state_dict()``."""
        out: State = {}
        for i, (w, b) in enumerate(self.params):
            out[f"{2 * i}.W"], out[f"{2 * i}.b"] = np.array(w), np.array(b)
        return out

    def optimizer_denormal_fraction(self) -> float:
        return denormal_fraction(
            [np.asarray(a) for a in self.jax.tree_util.tree_leaves(self.vel)]
        )

    def close(self) -> None:
        del self.X, self.y, self.params, self.vel, self._step


def denormal_fraction(arrays: Sequence[Any]) -> float:
    """Share of all values in the host ``arrays`` that are nonzero denormals."""
    total = sum(int(np.size(a)) for a in arrays)
    if not total:
        return 0.0
    count = 0
    for a in arrays:
        a = np.abs(np.asarray(a))
        tiny = np.finfo(a.dtype).tiny
        count += int(np.count_nonzero((a > 0) & (a < tiny)))
    return count / total


def make_runner(
    system: str,
    sizes: Sequence[int],
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    backend: Backend,
    state: State | None,
    lr: float = LR,
    seed: int = SEED,
    worker: bool = False,
) -> Runner:
    """The runner of one ``system``; a peer needs xpnet's initial ``state``.

    ``worker``: this process runs only this system (lets JAX bind its CPU).
    """
    if system == "xpnet":
        return XpnetRunner(sizes, X, y, batch_size, backend, lr=lr, seed=seed)
    if state is None:
        raise XpnetError(f"{system} needs xpnet's initial weights")
    if system in ("pytorch", "pytorch-graph", "xpnet-graph"):
        device = backend.device_name
        cls = {
            "pytorch": TorchRunner,
            "pytorch-graph": TorchGraphRunner,
            "xpnet-graph": XpnetGraphRunner,
        }[system]
        return cls(sizes, X, y, batch_size, device, state, lr=lr, seed=seed)
    if system == "sklearn":
        return SklearnRunner(sizes, X, y, batch_size, state, lr=lr, seed=seed)
    if system == "numpy":
        return NumpyRunner(sizes, X, y, batch_size, state, lr=lr, seed=seed)
    if system == "jax":
        return JaxRunner(
            sizes, X, y, batch_size, state, lr=lr, seed=seed, worker=worker
        )
    raise XpnetError(f"unknown system {system!r}")


def make_runners(
    sizes: Sequence[int],
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    backend: Backend,
    peers: Sequence[str] = DEFAULT_PEERS,
    lr: float = LR,
    seed: int = SEED,
) -> tuple[dict[str, Runner], dict[str, str]]:
    """Runners for xpnet and each available peer, all from xpnet's initial weights.

    Returns ``(runners, skipped)`` where ``skipped`` maps a peer to its reason.
    """
    device = backend.device_name
    runners: dict[str, Runner] = {}
    skipped: dict[str, str] = {}
    xr = XpnetRunner(sizes, X, y, batch_size, backend, lr=lr, seed=seed)
    runners["xpnet"] = xr
    state = xr.initial_state()
    for peer in PEERS:
        if peer not in peers:
            skipped[peer] = "skipped (not requested with --peers)"
            continue
        reason = peer_skip_reason(peer, device)
        if reason:
            skipped[peer] = reason
            continue
        runners[peer] = make_runner(
            peer, sizes, X, y, batch_size, backend, state, lr=lr, seed=seed
        )
    return runners, skipped


def runner_extras(runner: Runner) -> dict[str, Any]:
    """Diagnostics after a row: denormal share of optimizer state; for xpnet the
    loop-only seconds of fit and the cost of fit's input checks."""
    entry: dict[str, Any] = {}
    try:
        entry["optimizer_denormal_fraction"] = runner.optimizer_denormal_fraction()
    except Exception:
        pass
    if isinstance(runner, JaxRunner):
        entry["threads"] = runner.threads
    if isinstance(runner, XpnetRunner):
        entry["fit_loop_s"] = statistics.median(runner.loop_seconds[-3:])
        entry["input_checks_s"] = runner.input_check_seconds()
    return entry
