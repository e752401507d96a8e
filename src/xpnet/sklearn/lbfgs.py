"""``solver="lbfgs"``: SciPy's L-BFGS-B on the loss and gradient that xpnet's
model computes on its device, over its flat parameter buffer.

The objective is scikit-learn's: the (weighted) mean loss over all rows plus
``0.5 * alpha * ||W||^2 / sum(sample_weight)`` (weights, not biases; the sum
is the row count without weights), its gradient the model's backward pass
plus ``alpha * W / sum(sample_weight)``. SciPy works in float64 on the host:
each evaluation copies the parameters to the device once and the loss and
gradient back once (the model computes in its own dtype). The model's flat
buffer holds every weight matrix, then every bias, in layer order: the
layout of scikit-learn's packed parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.optimize
from sklearn.utils.optimize import _check_optimize_result

from ..backend import to_numpy
from ..model import Sequential

if TYPE_CHECKING:
    from .base import BaseMLP

__all__ = ["fit_lbfgs"]


def fit_lbfgs(
    est: BaseMLP,
    model: Sequential,
    X: Any,
    targets: np.ndarray,
    weight: np.ndarray | None,
) -> tuple[int, float]:
    """Minimise from the model's current weights for at most ``max_iter``
    iterations and ``max_fun`` evaluations, to the projected-gradient
    tolerance ``tol``; the model ends with the result. Returns ``(n_iter_,
    loss_)``; warns as scikit-learn does (ConvergenceWarning) when L-BFGS did
    not converge."""
    with model.backend.context():
        objective = _Objective(model, X, targets, weight, est.alpha)
        start = to_numpy(model.parameters.flat).astype(np.float64)
        result = scipy.optimize.minimize(
            objective,
            start,
            method="L-BFGS-B",
            jac=True,
            options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol},
        )
        objective.set_parameters(result.x)
    n_iter = _check_optimize_result("lbfgs", result, est.max_iter)
    return n_iter, float(result.fun)


class _Objective:
    """``theta (parameters,) float64 -> (loss, gradient (parameters,))`` on
    the host, computed by ``model`` on its device over all of ``X``."""

    def __init__(
        self,
        model: Sequential,
        X: Any,
        targets: np.ndarray,
        weight: np.ndarray | None,
        alpha: float,
    ):
        self.model = model
        self.X = model.prepare_inputs(X, check=False)
        y, _, _ = model.prepare_targets(targets, self.X.shape[0], check=False)
        self.y = model.loss.targets(y, model.out_features)
        self.weight = (
            None if weight is None else model.to_device(weight, model.dtype_name)
        )
        total = float(self.X.shape[0] if weight is None else np.sum(weight))
        self.penalty = alpha / total  # scikit-learn's alpha / sw_sum

    def set_parameters(self, theta: np.ndarray) -> None:
        params = self.model.parameters
        values = self.model.backend.asarray(theta, self.model.dtype_name)
        if params.writeable:
            params.flat[...] = values
        else:
            params.replace(values)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        model, xp = self.model, self.model.xp
        self.set_parameters(theta)
        out = model.forward(self.X)
        loss = model.loss.value(out, self.y, self.weight)
        model.backward(model.loss.grad(out, self.y, 1.0, self.weight))
        params = model.parameters
        grads, flat, decayed = params.gather_grads(), params.flat, params.n_decayed
        weights = flat[:decayed]
        loss = loss + (0.5 * self.penalty) * xp.sum(weights * weights)
        grad = xp.concat([grads[:decayed] + self.penalty * weights, grads[decayed:]])
        # One read-back for both: the loss rides along as the last element.
        both = to_numpy(
            xp.concat([grad, xp.reshape(xp.astype(loss, grad.dtype), (1,))])
        )
        both = both.astype(np.float64)
        return float(both[-1]), both[:-1]
