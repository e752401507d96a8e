import importlib.util

import numpy as np
import pytest

import xpnet
from xpnet import SGD, Adam, AdamW
from xpnet.optimizers import FLUSH_EVERY, get_optimizer
from xpnet.schedules import Constant, CosineDecay, InverseTimeDecay, StepDecay

HAS_TORCH = importlib.util.find_spec("torch") is not None


class Holder:
    """A stand-in layer with one weight matrix and one bias."""

    decay = frozenset({"W"})

    def __init__(self, backend, W, b):
        self.params = {"W": backend.asarray(W), "b": backend.asarray(b)}
        self.grads = {}


def _run(backend, optimizer, steps=5, seed=0):
    """Apply ``steps`` updates with fixed pseudo-random gradients; host results."""
    rng = np.random.default_rng(seed)
    holder = Holder(backend, rng.normal(size=(3, 4)), rng.normal(size=4))
    grads = [(rng.normal(size=(3, 4)), rng.normal(size=4)) for _ in range(steps)]
    for gW, gb in grads:
        # Copies: the in-place path consumes (scales) the gradient buffers.
        holder.grads = {
            "W": backend.asarray(gW.copy()),
            "b": backend.asarray(gb.copy()),
        }
        optimizer.step([holder])
    return ({k: xpnet.to_numpy(v) for k, v in holder.params.items()}, grads, rng)


def _reference_sgd(W, b, grads, lr, mu, nesterov, wd):
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    for gW, gb in grads:
        gW = gW + wd * W
        vW, vb = mu * vW - lr * gW, mu * vb - lr * gb
        if nesterov:
            W, b = W + mu * vW - lr * gW, b + mu * vb - lr * gb
        else:
            W, b = W + vW, b + vb
    return W, b


@pytest.mark.parametrize(
    "mu,nesterov,wd",
    [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0), (0.5, False, 0.01)],
)
@pytest.mark.parametrize("inplace", [None, False])
def test_sgd_matches_its_update_rule(backend, mu, nesterov, wd, inplace):
    opt = SGD(lr=0.1, momentum=mu, nesterov=nesterov, weight_decay=wd, inplace=inplace)
    got, grads, _ = _run(backend, opt)
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(3, 4)), rng.normal(size=4)
    W, b = _reference_sgd(W, b, grads, 0.1, mu, nesterov, wd)
    np.testing.assert_allclose(got["W"], W, rtol=1e-12)
    np.testing.assert_allclose(got["b"], b, rtol=1e-12)
    assert opt.iterations == 5


def _torch_reference(opt_cls, kwargs, steps=5):
    import torch

    rng = np.random.default_rng(0)
    W = torch.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    b = torch.tensor(rng.normal(size=4), requires_grad=True)
    grads = [(rng.normal(size=(3, 4)), rng.normal(size=4)) for _ in range(steps)]
    decay = kwargs.pop("weight_decay", 0.0)
    opt = opt_cls(
        [{"params": [W], "weight_decay": decay}, {"params": [b], "weight_decay": 0.0}],
        **kwargs,
    )
    for gW, gb in grads:
        W.grad, b.grad = torch.tensor(gW), torch.tensor(gb)
        opt.step()
    return W.detach().numpy(), b.detach().numpy()


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("inplace", [None, False])
@pytest.mark.parametrize(
    "name,ours,theirs",
    [
        (
            "sgd-momentum",
            lambda ip: SGD(0.05, momentum=0.9, inplace=ip),
            ("SGD", {"lr": 0.05, "momentum": 0.9}),
        ),
        (
            "sgd-nesterov-wd",
            lambda ip: SGD(0.05, 0.9, True, 1e-2, inplace=ip),
            (
                "SGD",
                {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
            ),
        ),
        ("adam", lambda ip: Adam(0.01, inplace=ip), ("Adam", {"lr": 0.01})),
        (
            "adam-l2",
            lambda ip: Adam(0.01, weight_decay=0.1, inplace=ip),
            ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
        ),
        (
            "adamw",
            lambda ip: AdamW(0.01, weight_decay=0.1, inplace=ip),
            ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
        ),
    ],
)
def test_optimizers_match_pytorch(backend, name, ours, theirs, inplace):
    import torch

    got, _, _ = _run(backend, ours(inplace))
    W, b = _torch_reference(getattr(torch.optim, theirs[0]), dict(theirs[1]))
    np.testing.assert_allclose(got["W"], W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["b"], b, rtol=1e-12, atol=1e-14)


def test_adam_first_step_moves_each_weight_by_lr(numpy_backend):
    # After one step m/sqrt(v) = sign(g) exactly (bias-corrected), so |dw| = lr.
    opt = Adam(lr=0.01, eps=0.0)
    holder = Holder(numpy_backend, np.zeros((3, 4)), np.zeros(4))
    holder.grads = {"W": np.arange(1.0, 13.0).reshape(3, 4) - 6.5, "b": -np.ones(4)}
    opt.step([holder])
    np.testing.assert_allclose(np.abs(holder.params["W"]), 0.01, rtol=1e-12)
    np.testing.assert_allclose(holder.params["b"], 0.01, rtol=1e-12)


def test_momentum_state_is_flushed_out_of_the_denormal_range(numpy_backend):
    opt = SGD(lr=1.0, momentum=0.5)
    holder = Holder(numpy_backend, np.ones((2, 2), np.float32), np.ones(2, np.float32))
    holder.grads = {
        "W": np.full((2, 2), -1e-30, np.float32),
        "b": np.zeros(2, np.float32),
    }
    opt.step([holder])
    tiny = np.finfo(np.float32).smallest_normal
    for _ in range(FLUSH_EVERY * 3 - 1):
        holder.grads = {"W": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
        opt.step([holder])
        v = opt.slots["velocity"]
        if opt.iterations % FLUSH_EVERY == 0:
            assert not np.any((v != 0) & (np.abs(v) < tiny))
    assert np.all(opt.slots["velocity"] == 0)


def test_schedules():
    assert Constant(0.1)(1000) == 0.1
    assert InverseTimeDecay(0.1, 0.5)(4) == pytest.approx(0.1 / 3)
    assert StepDecay(1.0, step_size=10, gamma=0.5)(25) == 0.25
    cos = CosineDecay(1.0, total_steps=100, min_lr=0.1)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.55) and cos(500) == 0.1


def test_optimizer_uses_schedule_per_update(numpy_backend):
    opt = SGD(lr=InverseTimeDecay(1.0, decay=1.0))
    holder = Holder(numpy_backend, np.zeros((3, 4)), np.zeros(4))
    for _ in range(3):
        holder.grads = {"W": np.ones((3, 4)), "b": np.ones(4)}
        opt.step([holder])
    # lr = 1, 1/2, 1/3
    np.testing.assert_allclose(holder.params["b"], -(1 + 1 / 2 + 1 / 3))
    assert opt.lr == pytest.approx(0.25)


def test_weight_decay_spares_biases(numpy_backend):
    opt = SGD(lr=0.1, weight_decay=0.5)
    holder = Holder(numpy_backend, np.ones((3, 4)), np.ones(4))
    holder.grads = {"W": np.zeros((3, 4)), "b": np.zeros(4)}
    opt.step([holder])
    np.testing.assert_allclose(holder.params["W"], 0.95)
    np.testing.assert_allclose(holder.params["b"], 1.0)


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: get_optimizer("rmsprop"),
            r"unknown optimizer 'rmsprop': choose one of sgd",
        ),
        (lambda: SGD(lr=-1), "learning rate must be a positive"),
        (lambda: SGD(lr=float("nan")), "learning rate must be a positive"),
        (lambda: SGD(momentum=1.5), "momentum must be below 1"),
        (lambda: SGD(nesterov=True), "nesterov=True needs a momentum"),
        (lambda: Adam(beta1=1.0), r"beta1 must be in \[0, 1\)"),
        (lambda: SGD(weight_decay=-0.1), "weight_decay must be a non-negative"),
    ],
)
def test_bad_optimizer_settings_are_clear(make, match):
    with pytest.raises(xpnet.XpnetError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("inplace", [None, False])
@pytest.mark.parametrize("nesterov,wd", [(False, 0.0), (True, 0.01), (False, 0.1)])
def test_sgd_with_lr_folded_into_gradients_matches(backend, inplace, nesterov, wd):
    def run(prescale):
        opt = SGD(
            lr=InverseTimeDecay(0.1, 0.5),
            momentum=0.9,
            nesterov=nesterov,
            weight_decay=wd,
            inplace=inplace,
        )
        rng = np.random.default_rng(0)
        holder = Holder(backend, rng.normal(size=(3, 4)), rng.normal(size=4))
        for _ in range(4):
            gW, gb = rng.normal(size=(3, 4)), rng.normal(size=4)
            scale = opt.lr if prescale else 1.0
            holder.grads = {
                "W": backend.asarray(gW * scale),
                "b": backend.asarray(gb * scale),
            }
            opt.step([holder], grads_scaled_by_lr=prescale)
        return {k: xpnet.to_numpy(v) for k, v in holder.params.items()}

    folded, plain = run(True), run(False)
    for key in plain:
        np.testing.assert_allclose(folded[key], plain[key], rtol=1e-12, atol=1e-15)


def test_adam_refuses_prescaled_gradients(numpy_backend):
    holder = Holder(numpy_backend, np.zeros((3, 4)), np.zeros(4))
    holder.grads = {"W": np.ones((3, 4)), "b": np.ones(4)}
    with pytest.raises(xpnet.XpnetError, match="Adam needs unscaled gradients"):
        Adam().step([holder], grads_scaled_by_lr=True)
