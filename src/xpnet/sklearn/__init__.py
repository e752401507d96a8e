"""scikit-learn estimators trained by xpnet: :class:`MLPClassifier` and
:class:`MLPRegressor`, drop-ins for ``sklearn.neural_network``'s classes of
the same names.

They take every parameter of scikit-learn's (with its meaning) plus
``device``, ``backend``, ``dtype``, ``init`` and ``lr_decay``, and train an
xpnet network with :meth:`xpnet.Sequential.fit` (``solver="sgd"``/``"adam"``)
or SciPy's L-BFGS-B on xpnet's loss and gradient (``"lbfgs"``); they pass
scikit-learn's estimator checks and its own MLP test module, and work in
``Pipeline``, ``GridSearchCV`` and ``cross_val_score``. scikit-learn is an
optional dependency (``pip install 'xpnet[sklearn]'``); ``import xpnet``
never imports it. See :mod:`xpnet.sklearn.estimators` for the details::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xpnet.sklearn import MLPClassifier

    clf = make_pipeline(StandardScaler(), MLPClassifier((256,), random_state=0))
    clf.fit(X_train, y_train).score(X_test, y_test)
"""

from __future__ import annotations

import re

MIN_SKLEARN = (1, 6)


def _require_sklearn() -> None:
    try:
        import sklearn
    except ImportError:
        raise ImportError(
            "xpnet.sklearn needs scikit-learn, which is not installed: "
            "pip install 'xpnet[sklearn]'"
        ) from None
    found = re.match(r"(\d+)\.(\d+)", sklearn.__version__)
    if found and tuple(map(int, found.groups())) < MIN_SKLEARN:
        raise ImportError(
            f"xpnet.sklearn needs scikit-learn >= 1.6, found {sklearn.__version__}: "
            "pip install --upgrade 'xpnet[sklearn]'"
        )


_require_sklearn()

from .estimators import MLPClassifier, MLPRegressor  # noqa: E402

__all__ = ["MLPClassifier", "MLPRegressor"]
