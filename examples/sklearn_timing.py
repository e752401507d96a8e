"""xpnet.sklearn next to scikit-learn's own MLPClassifier: the one-line
migration, timed (the README's migration section).

Both fit the same estimator, parameters and data, interleaved (xpnet, then
scikit-learn, ``--repeats`` times), on the CPU with one BLAS thread each; the
script prints the median fit time with its spread (min-max) and the test
accuracy of each. Data: scikit-learn's ``load_digits`` (1,797 8x8 images,
float64, the first 1,200 to train) and xpnet's bundled MNIST sample (5,000
training images, 10,000 test, float32, pixels scaled to [0, 1])::

    OPENBLAS_NUM_THREADS=1 python examples/sklearn_timing.py --repeats 5

Each fit runs a fixed number of epochs (``n_iter_no_change=inf``) so that
both do the same work; the L-BFGS row runs to scikit-learn's own stopping
rule (the same in both).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLP  # noqa: E402

from xpnet.datasets import load_mnist_sample  # noqa: E402
from xpnet.preprocessing import preprocess  # noqa: E402
from xpnet.sklearn import MLPClassifier as XpnetMLP  # noqa: E402

#: (name, data, estimator parameters)
WORKLOADS = [
    ("digits adam", "digits", dict(max_iter=100)),
    ("digits sgd", "digits", dict(solver="sgd", learning_rate_init=0.1, max_iter=100)),
    ("digits lbfgs", "digits", dict(solver="lbfgs", max_iter=200)),
    ("mnist-sample adam", "mnist", dict(hidden_layer_sizes=(256,), max_iter=20)),
]


def datasets() -> dict[str, tuple[np.ndarray, ...]]:
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    sample = preprocess(load_mnist_sample(), scale=True, dtype="float32")
    return {
        "digits": (X[:1200], y[:1200], X[1200:], y[1200:]),
        "mnist": (sample.x_train, sample.y_train, sample.x_test, sample.y_test),
    }


def timed_fit(cls: type, params: dict, data: tuple) -> tuple[float, float]:
    X, y, X_test, y_test = data
    est = cls(random_state=0, n_iter_no_change=np.inf, **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    return time.perf_counter() - start, est.score(X_test, y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = datasets()
    print(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    print(
        "| workload | xpnet s (min-max) | sklearn s (min-max) | sklearn/xpnet | "
        "xpnet acc | sklearn acc |"
    )
    print("|---|---|---|---|---|---|")
    for name, which, params in WORKLOADS:
        times: dict[str, list[float]] = {"xpnet": [], "sklearn": []}
        scores: dict[str, float] = {}
        for _ in range(args.repeats):
            for label, cls in (("xpnet", XpnetMLP), ("sklearn", SklearnMLP)):
                seconds, scores[label] = timed_fit(cls, params, data[which])
                times[label].append(seconds)
        mine, theirs = (statistics.median(times[k]) for k in ("xpnet", "sklearn"))
        spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in times.items()}
        print(
            f"| {name} | {mine:.2f} ({spread['xpnet']}) | {theirs:.2f} "
            f"({spread['sklearn']}) | {theirs / mine:.2f}x | "
            f"{scores['xpnet']:.4f} | {scores['sklearn']:.4f} |"
        )


if __name__ == "__main__":
    main()
