"""Learning-rate schedules: ``schedule(step) -> lr`` as a host float.

``step`` counts optimizer updates (batches) from 0. The value is a Python
float, so computing it never touches the device. Constant, inverse-time,
step, exponential and cosine decay, and :class:`Warmup` (a linear warm-up
before any of them); the plateau rule is a callback
(:class:`xpnet.callbacks.ReduceLROnPlateau`), which scales whatever schedule
runs. Every parameter but the rate itself has a default. Schedules are saved
in checkpoints by name (:func:`schedule_name`, :func:`schedule_from_config`).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import XpnetError


class Schedule:
    """Base class: a callable from the update count to the learning rate."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "non-negative" if allow_zero else "positive"
        raise XpnetError(f"{name} must be a {need} finite number, got {value!r}")
    return value


class Constant(Schedule):
    """``lr(step) = lr``."""

    def __init__(self, lr: float):
        self.lr = _positive("learning rate", lr)

    def __call__(self, step: int) -> float:
        return self.lr


class InverseTimeDecay(Schedule):
    """``lr(step) = lr / (1 + decay * step)`` (the classic texts' "decay")."""

    def __init__(self, lr: float, decay: float = 0.001):
        self.lr = _positive("learning rate", lr)
        self.decay = _positive("lr decay", decay, allow_zero=True)

    def __call__(self, step: int) -> float:
        return self.lr / (1.0 + self.decay * step)


class StepDecay(Schedule):
    """``lr(step) = lr * gamma ** (step // step_size)``."""

    def __init__(self, lr: float, step_size: int = 1000, gamma: float = 0.1):
        self.lr = _positive("learning rate", lr)
        if int(step_size) < 1:
            raise XpnetError(f"step_size must be at least 1, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _positive("gamma", gamma)

    def __call__(self, step: int) -> float:
        return self.lr * self.gamma ** (step // self.step_size)


class CosineDecay(Schedule):
    """Cosine annealing from ``lr`` to ``min_lr`` over ``total_steps``, then flat.

    ``lr(step) = min_lr + (lr - min_lr) * (1 + cos(pi * min(step, T) / T)) / 2``
    (Loshchilov & Hutter, https://arxiv.org/abs/1608.03983, without restarts).
    """

    def __init__(self, lr: float, total_steps: int = 1000, min_lr: float = 0.0):
        self.lr = _positive("learning rate", lr)
        if int(total_steps) < 1:
            raise XpnetError(f"total_steps must be at least 1, got {total_steps!r}")
        self.total_steps = int(total_steps)
        self.min_lr = _positive("min_lr", min_lr, allow_zero=True)

    def __call__(self, step: int) -> float:
        frac = min(step, self.total_steps) / self.total_steps
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (
            1.0 + math.cos(math.pi * frac)
        )


class ExponentialDecay(Schedule):
    """``lr(step) = lr * decay_rate ** (step / decay_steps)`` (Keras's, not
    staircased): the rate falls by ``decay_rate`` every ``decay_steps``."""

    def __init__(self, lr: float, decay_rate: float = 0.96, decay_steps: int = 1000):
        self.lr = _positive("learning rate", lr)
        self.decay_rate = _positive("decay_rate", decay_rate)
        if self.decay_rate > 1:
            raise XpnetError(f"decay_rate must be at most 1, got {decay_rate!r}")
        if int(decay_steps) < 1:
            raise XpnetError(f"decay_steps must be at least 1, got {decay_steps!r}")
        self.decay_steps = int(decay_steps)

    def __call__(self, step: int) -> float:
        return self.lr * self.decay_rate ** (step / self.decay_steps)


class Warmup(Schedule):
    """A linear warm-up of ``warmup_steps`` updates, then ``after``.

    ``lr(step) = after(0) * (step + 1) / warmup_steps`` for ``step <
    warmup_steps`` (the first update already moves; the last warm-up update
    has the full rate), then ``after(step - warmup_steps)``: the schedule
    after it starts at its own step 0 when the warm-up ends.
    """

    def __init__(self, after: Schedule | dict[str, Any], warmup_steps: int = 100):
        self.after = schedule_from_config(after) if isinstance(after, dict) else after
        if not isinstance(self.after, Schedule) or isinstance(self.after, Warmup):
            raise XpnetError("Warmup needs a schedule (not a warm-up) to run after")
        if int(warmup_steps) < 1:
            raise XpnetError(f"warmup_steps must be at least 1, got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.after(0) * (step + 1) / self.warmup_steps
        return self.after(step - self.warmup_steps)

    def config(self) -> dict[str, Any]:
        after = {"name": schedule_name(self.after), **self.after.config()}
        return {"after": after, "warmup_steps": self.warmup_steps}

    @property
    def lr(self) -> float:
        """The rate the warm-up climbs to (the next schedule's start)."""
        return self.after(0)


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "inverse_time": InverseTimeDecay,
    "step": StepDecay,
    "exponential": ExponentialDecay,
    "cosine": CosineDecay,
    "warmup": Warmup,
}


def as_schedule(lr: float | Schedule) -> Schedule:
    """A number becomes :class:`Constant`; a schedule is returned as is."""
    if isinstance(lr, Schedule):
        return lr
    if callable(lr):
        raise XpnetError("lr must be a number or an xpnet.schedules.Schedule")
    return Constant(lr)


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule saved as ``{"name": ..., **config}``."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise XpnetError(
            f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}"
        )
    return SCHEDULES[name](**config)


def schedule_name(schedule: Schedule) -> str:
    for name, cls in SCHEDULES.items():
        if type(schedule) is cls:
            return name
    raise XpnetError(f"schedule {type(schedule).__name__} cannot be saved by name")
