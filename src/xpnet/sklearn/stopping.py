"""The stochastic solvers (``"sgd"``, ``"adam"``, xpnet's ``"adamw"``) as
scikit-learn runs them, on :meth:`xpnet.Sequential.fit`.

:class:`EpochRule` is scikit-learn's end-of-epoch bookkeeping, decided on
host numbers only: the loss curve (with the L2 term, as scikit-learn's),
``n_iter_``/``t_``, the validation score and best weights of
``early_stopping``, the learning-rate schedule of ``learning_rate``
(``"invscaling"``: ``learning_rate_init / (t_ + 1) ** power_t`` after each
epoch; ``"adaptive"``: divided by 5 whenever the stopping rule fires, stopping
only once it is at most 1e-6) and the stopping rule itself (more than
``n_iter_no_change`` epochs in a row without an improvement of ``tol``).
:func:`train_stochastic` runs the epochs with the rule as their callback,
which ends training through ``model.stop_training``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from ..callbacks import BatchLogs, Callback
from ..errors import DivergenceError, XpnetError
from ..model import Sequential
from ..schedules import Constant
from . import arrays

if TYPE_CHECKING:
    from .base import BaseMLP

__all__ = ["EpochRule", "train_stochastic"]

#: "adaptive" stops once the learning rate is at most this (scikit-learn's)
ADAPTIVE_FLOOR = 1e-6


class EpochRule(Callback):
    """scikit-learn's end of an epoch for estimator ``est`` training
    ``model`` on ``n`` rows, as a callback of :meth:`Sequential.fit`: it
    stops training by setting ``model.stop_training``.

    scikit-learn's L2 penalty, ``0.5 * alpha * ||W||^2`` divided by the
    batch's weight sum (``W``: every weight, not the biases), is the
    optimizer's weight decay ``alpha / sw_b``, set before each batch from its
    rows (times ``mean_weight``: the batches' own sums are not known on the
    host), and the epoch's loss gets scikit-learn's L2 term ``sum_b 0.5 alpha
    ||W_b||^2 len_b / sw_b / n`` with ``W_b`` the weights before batch
    ``b``'s update: exact without sample weights. The squares are summed on
    the device after each step and read back with the epoch's loss (no read
    of their own).

    Args:
        n, batch: the rows trained on and the batch size.
        mean_weight: the mean sample weight of those rows (1 without).
        validation: ``(X, y, sample_weight)`` of the held-out rows with
            ``early_stopping``, else ``None``.
    """

    def __init__(
        self,
        est: BaseMLP,
        model: Sequential,
        n: int,
        batch: int,
        mean_weight: float,
        validation: tuple[Any, np.ndarray, np.ndarray | None] | None,
        incremental: bool,
    ):
        self.est, self.model, self.n, self.batch = est, model, n, batch
        self.decay_per_row = est.alpha / mean_weight
        self.l2_factor = 0.5 * self.decay_per_row / n
        self.validation = validation
        self.incremental = incremental
        #: why training stopped early, or None
        self.stopped: str | None = None
        self._squares: Any = None
        self._l2 = 0.0
        if self.l2_factor:
            # Only then a per-batch callback (fit calls on_batch_end on
            # callbacks that have one).
            self.on_batch_end = self._after_batch  # type: ignore[method-assign]

    def _weight_squares(self) -> Any:
        params = self.model.parameters
        weights = params.flat[: params.n_decayed]
        return self.model.xp.sum(weights * weights)

    def _decay_for(self, rows: int) -> None:
        self.model.optimizer.weight_decay = self.decay_per_row / rows

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._l2 = 0.0
        self._decay_for(min(self.batch, self.n))
        if self.l2_factor:
            self._squares = self._weight_squares()  # before the first batch

    def _after_batch(self, batch: int, logs: BatchLogs) -> None:
        done = logs.done
        if done < self.n:  # the weights and the rows of the next batch
            self._squares = self._squares + self._weight_squares()
            self._decay_for(min(self.batch, self.n - done))

    def epoch_terms(self, outs: Any, targets: Any) -> list[Any]:
        return [self._squares] if self.l2_factor else []

    def take_epoch_terms(self, values: list[float]) -> None:
        if values:
            self._l2 = self.l2_factor * values[0]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self.epoch_end(logs["loss"] + self._l2):
            self.model.stop_training = True
            self.model.stop_reason = "no_improvement"

    def epoch_end(self, loss: float) -> bool:
        """Record an epoch whose mean loss (L2 term included) was ``loss``;
        True when training stops here."""
        est = self.est
        est.n_iter_ += 1
        est.t_ += self.n
        est.loss_curve_.append(loss)
        est.loss_ = loss
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        self._count_no_improvement(loss)
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            self._set_lr(est.learning_rate_init / (est.t_ + 1) ** est.power_t)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation else "Training loss"
            message = (
                f"{what} did not improve more than tol={est.tol:f} for "
                f"{est.n_iter_no_change} consecutive epochs."
            )
            if self._stops(message):
                self.stopped = message
                return True
            est._no_improvement_count = 0
        return self.incremental

    def _count_no_improvement(self, loss: float) -> None:
        est = self.est
        if self.validation is None:
            best_loss = float(est.best_loss_)  # type: ignore[arg-type]
            if loss > best_loss - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if loss < best_loss:  # never NaN
                est.best_loss_ = loss
            return
        score = est._validation_score(self.model, *self.validation)
        scores = est.validation_scores_
        best = float(est.best_validation_score_)  # type: ignore[arg-type]
        assert scores is not None
        scores.append(score)
        if est.verbose:
            print(f"Validation score: {score:f}")
        if score < best + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > best:
            est.best_validation_score_ = score
            est._best_weights = self.model.state_dict()

    def _stops(self, message: str) -> bool:
        """scikit-learn's ``trigger_stopping``: only SGD with ``"adaptive"``
        goes on, at a fifth of the learning rate, until it reaches 1e-6."""
        est = self.est
        lr = self.model.optimizer.lr
        if est.solver != "sgd" or est.learning_rate != "adaptive":
            if est.verbose:
                print(message + " Stopping.")
            return True
        if lr <= ADAPTIVE_FLOOR:
            if est.verbose:
                print(message + " Learning rate too small. Stopping.")
            return True
        self._set_lr(lr / 5.0)
        if est.verbose:
            print(message + f" Setting learning rate to {lr / 5.0:f}")
        return False

    def _set_lr(self, lr: float) -> None:
        self.est._learning_rate = lr
        self.model.optimizer.schedule = Constant(lr)


def train_stochastic(
    est: BaseMLP,
    model: Sequential,
    X: Any,
    targets: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None,
    random_state: np.random.RandomState,
    incremental: bool,
) -> None:
    """scikit-learn's ``_fit_stochastic`` on xpnet: ``max_iter`` epochs (one
    in ``partial_fit``) over ``X: (samples, features)`` and the model's
    ``targets``; ``y`` are the targets as the user gave them (what the
    validation score compares with)."""
    if not incremental:
        # fit starts a fresh optimizer, partial_fit goes on with its own.
        model.optimizer = est._optimizer()
        est._learning_rate = est.learning_rate_init
    if est.early_stopping and incremental:
        raise XpnetError("partial_fit does not support early_stopping=True")
    if "loss_curve_" not in vars(est) or (
        est.early_stopping and est.validation_scores_ is None
    ):
        est._start_tracking(model)  # e.g. after an L-BFGS fit, or switched on
    est.n_iter_ = 0  # the epochs of this call, as scikit-learn counts them
    validation = None
    if est.early_stopping:
        X, targets, validation, weight = _hold_out(
            est, X, targets, y, weight, random_state
        )
    n = X.shape[0]
    batch = _batch_size(est, n)
    mean_weight = 1.0 if weight is None else float(np.mean(weight))
    rule = EpochRule(est, model, n, batch, mean_weight, validation, incremental)
    epochs = 1 if incremental else est.max_iter
    _run_epochs(rule, model, X, targets, weight, epochs, batch)
    if rule.stopped is None and not incremental:
        warnings.warn(
            f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and "
            "the optimization hasn't converged yet.",
            ConvergenceWarning,
            stacklevel=4,
        )
    if est.early_stopping:
        model.load_state_dict(est._best_weights)


def _run_epochs(
    rule: EpochRule,
    model: Sequential,
    X: Any,
    targets: np.ndarray,
    weight: np.ndarray | None,
    epochs: int,
    batch: int,
) -> None:
    """``epochs`` passes of :meth:`Sequential.fit` with ``rule`` as its
    callback (it stops training). A diverged epoch (xpnet's guard: a
    non-finite loss, or one 100x the start) is recorded with a NaN loss and
    training goes on, as scikit-learn's does (fit's non-finite weight check
    comes after)."""
    done = model.epochs_trained
    while model.epochs_trained - done < epochs:
        try:
            model.fit(
                X,
                targets,
                epochs=epochs - (model.epochs_trained - done),
                batch_size=batch,
                shuffle=bool(rule.est.shuffle),
                callbacks=[rule, *(rule.est.callbacks or [])],
                check_inputs=False,
                sample_weight=weight,
            )
            return
        except DivergenceError:
            # The guard measures a new reference when fit starts again.
            if rule.epoch_end(math.nan):
                return


def _batch_size(est: BaseMLP, n: int) -> int:
    if est.batch_size == "auto":
        return min(200, n)
    if int(est.batch_size) > n:
        warnings.warn(
            "Got `batch_size` less than 1 or larger than sample size. It is going "
            "to be clipped",
            stacklevel=5,
        )
    return int(np.clip(est.batch_size, 1, n))


def _hold_out(
    est: BaseMLP,
    X: Any,
    targets: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None,
    random_state: np.random.RandomState,
) -> tuple[Any, np.ndarray, tuple[Any, np.ndarray, np.ndarray | None], Any]:
    """scikit-learn's split for early stopping: ``validation_fraction`` of the
    rows, drawn from ``random_state`` after the initial weights (so the same
    rows as scikit-learn's for the same ``random_state``), stratified only for
    a single-output classifier. Returns the training rows' X, targets and
    weights and the held-out ``(X, y, weights)``."""
    rows = np.arange(X.shape[0])
    train, val = train_test_split(
        rows,
        random_state=random_state,
        test_size=est.validation_fraction,
        stratify=est._stratify_by(targets),
    )
    if len(val) < 2:
        raise XpnetError(
            "The validation set is too small. Increase 'validation_fraction' or "
            "the size of your dataset."
        )
    w_val = None if weight is None else weight[val]
    held_out = (arrays.take_rows(X, val), y[val], w_val)
    w_train = None if weight is None else weight[train]
    return arrays.take_rows(X, train), targets[train], held_out, w_train
