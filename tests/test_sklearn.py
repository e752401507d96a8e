"""xpnet.sklearn: scikit-learn's own estimator checks, and the estimators in
Pipeline, GridSearchCV and cross_val_score, with every input kind.

Skipped as a whole, saying why, when scikit-learn (>= 1.6) is missing; the
array-API checks run with SCIPY_ARRAY_API=1 (set in conftest.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "sklearn",
    minversion="1.6",
    reason="scikit-learn >= 1.6 is not installed (pip install 'xpnet[sklearn]')",
)

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from xpnet.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

#: What the check instances change from the defaults, and why: the checks fit
#: a few hundred rows dozens of times; 50 epochs at a 10x learning rate reach
#: their accuracy bars (0.83 classifier, R² 0.5 regressor) in a fraction of
#: the default 200 epochs at 0.001.
FAST = dict(max_iter=50, learning_rate_init=0.01, random_state=0)

#: scikit-learn checks expected to fail, with the reason (at most 5 each):
#: none; every check scikit-learn yields for these estimators passes.
CLASSIFIER_XFAIL: dict[str, str] = {}
REGRESSOR_XFAIL: dict[str, str] = {}

#: Checks that scikit-learn itself skips, and why: the array-API checks
#: (``array_api_support=True``) run for every namespace and device it knows, and
#: skip those that this machine lacks. On a CPU-only machine with torch and
#: array-api-strict installed, per estimator (14 skips):
SKIPPED_BY_SKLEARN = {
    "check_array_api_input(cupy)": "CuPy is not installed",
    # (only where torch was built without CUDA: with a CUDA build and no GPU
    # they are skipped by _gpu_missing below, issue 16 item 27)
    "check_array_api_input(torch, cuda, float64 and float32)": "no CUDA GPU",
    "check_array_api_mixed_inputs(cupy/numpy with torch cuda, 2)": "no CUDA GPU",
    "check_array_api_input(torch, xpu, float64 and float32)": "no XPU device",
    "check_array_api_input(torch, mps, float32)": "no MPS (Apple) device",
    "check_array_api_mixed_inputs(numpy with torch mps, 2)": "no MPS device",
    "check_array_api_input(dpnp, cpu and gpu, float64 and float32)": "no dpnp",
}
#: And all array-API checks skip when SCIPY_ARRAY_API is unset (conftest.py
#: sets it) or when torch / array-api-strict are not installed.


def _expected_failures(estimator):
    if isinstance(estimator, MLPClassifier):
        return CLASSIFIER_XFAIL
    return REGRESSOR_XFAIL


def _uses_torch_cuda(check) -> bool:
    """Whether a scikit-learn check puts arrays on torch's CUDA device."""
    keywords = getattr(check, "keywords", {})
    pairs = [(keywords.get("array_namespace"), keywords.get("device_name"))]
    pairs += [
        (getattr(v, "xp", None), getattr(v, "device", None)) for v in keywords.values()
    ]
    return ("torch", "cuda") in pairs


def _gpu_missing(check) -> str | None:
    """Why ``check`` cannot run here, where scikit-learn does not skip it.

    scikit-learn skips its torch-CUDA checks only when torch was built
    without CUDA (``torch.backends.cuda.is_built()``); a CUDA build of torch,
    which ``pip install torch`` gives on Linux, on a machine without a GPU
    runs them, and they fail (issue 16 item 27). Skip them then, saying why.
    """
    if not _uses_torch_cuda(check):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return "no CUDA GPU (torch.cuda.is_available() is False)"


def run_check(estimator, check) -> None:
    reason = _gpu_missing(check)
    if reason is not None:
        pytest.skip(reason)
    check(estimator)


SKLEARN_CHECKS = parametrize_with_checks(
    [MLPClassifier(**FAST), MLPRegressor(**FAST)],
    expected_failed_checks=_expected_failures,
)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@SKLEARN_CHECKS
def test_sklearn_estimator_checks(estimator, check):
    run_check(estimator, check)


def test_item27_torch_cuda_checks_skip_with_a_cuda_build_and_no_gpu(monkeypatch):
    """As on a CPU-only Linux machine after ``pip install torch`` (a CUDA
    build): scikit-learn would run its torch-CUDA checks; ours skip them."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cuda_checks = [
        (estimator, check)
        for param in SKLEARN_CHECKS.args[1]
        for estimator, check in [param.values if hasattr(param, "values") else param]
        if _uses_torch_cuda(check)
    ]
    assert len(cuda_checks) >= 6  # per estimator: input (float64, float32), mixed
    for estimator, check in cuda_checks:
        with pytest.raises(pytest.skip.Exception, match="no CUDA GPU"):
            run_check(estimator, check)


# -- helpers ---------------------------------------------------------------------
def _blobs(n=120, seed=0):
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=n, centers=3, n_features=4, random_state=seed)
    return X, y


def _small(cls=MLPClassifier, **params):
    """An estimator that trains in well under a second on ~100 rows."""
    base = dict(hidden_layer_sizes=(16,), max_iter=30, learning_rate_init=0.01)
    return cls(**{**base, "random_state": 0, **params})


quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# -- scikit-learn's tools --------------------------------------------------------
@quiet
def test_pipeline_with_standard_scaler():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs()
    pipe = make_pipeline(StandardScaler(), _small()).fit(X * 100.0 + 7.0, y)
    assert pipe.score(X * 100.0 + 7.0, y) > 0.9
    assert pipe.predict_proba(X[:5]).shape == (5, 3)


@quiet
def test_grid_search_cv_picks_parameters_and_refits():
    from sklearn.model_selection import GridSearchCV

    X, y = _blobs()
    grid = {"hidden_layer_sizes": [(4,), (16,)], "alpha": [1e-4, 1e-2]}
    search = GridSearchCV(_small(), grid, cv=3).fit(X, y)
    assert set(search.best_params_) == {"hidden_layer_sizes", "alpha"}
    assert search.best_estimator_.hidden_layer_sizes in [(4,), (16,)]
    assert (
        search.best_estimator_.coefs_[0].shape[1]
        == (search.best_params_["hidden_layer_sizes"][0])
    )
    assert search.score(X, y) > 0.9


@quiet
def test_cross_val_score():
    from sklearn.model_selection import cross_val_score

    X, y = _blobs()
    scores = cross_val_score(_small(), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    from sklearn.datasets import make_regression

    Xr, yr = make_regression(n_samples=90, n_features=4, noise=1.0, random_state=0)
    r2 = cross_val_score(
        _small(MLPRegressor, max_iter=200), Xr, yr / yr.std(), cv=3, scoring="r2"
    )
    assert r2.min() > 0.5


# -- same numbers as xpnet itself ------------------------------------------------
@quiet
@pytest.mark.slow
def test_mnist_sample_accuracy_equals_xpnet_train():
    """The classifier with `xpnet train`'s settings is `xpnet train`: same
    seed and hyperparameters give the same losses and test accuracy, exactly."""
    import json
    import os
    import subprocess
    import sys

    from xpnet.datasets import load_mnist_sample
    from xpnet.preprocessing import preprocess

    cli = [
        *("--dataset", "mnist-sample", "--device", "cpu", "--hidden", "32"),
        *("--epochs", "2", "--batch-size", "64", "--seed", "3"),
        *("--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9"),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "xpnet", "train", *cli, "--quiet", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    history = json.loads(proc.stdout.splitlines()[-1])["history"]

    data = preprocess(load_mnist_sample(), scale=True, dtype="float32")
    clf = MLPClassifier(
        hidden_layer_sizes=(32,),
        solver="sgd",
        learning_rate_init=0.05,
        momentum=0.9,
        nesterovs_momentum=False,  # xpnet train's SGD is plain momentum
        init="xpnet",  # xpnet train's initial weights, not scikit-learn's
        alpha=0.0,
        batch_size=64,
        max_iter=2,
        random_state=3,
    ).fit(data.x_train, data.y_train)
    assert clf.loss_curve_ == [row["loss"] for row in history]
    assert clf.score(data.x_test, data.y_test) == history[-1]["test_accuracy"]
    assert history[-1]["test_accuracy"] > 0.85


def test_alpha_means_what_it_means_in_sklearn():
    """One SGD step from the same weights moves them as scikit-learn's own
    MLPRegressor does: alpha is the L2 penalty 0.5 * alpha * ||W||^2 / batch."""
    import numpy as np
    from sklearn.neural_network import MLPRegressor as SkRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    params = dict(
        hidden_layer_sizes=(4,),
        activation="tanh",
        solver="sgd",
        momentum=0.0,
        alpha=0.5,
        batch_size=20,
        learning_rate_init=0.1,
        shuffle=False,
        random_state=0,
    )
    ours = MLPRegressor(**params, dtype="float64").partial_fit(X, y)
    theirs = SkRegressor(**params).partial_fit(X, y)
    theirs.coefs_ = [w.copy() for w in ours.coefs_]
    theirs.intercepts_ = [b.copy() for b in ours.intercepts_]
    ours.partial_fit(X, y)
    theirs.partial_fit(X, y)
    mine, sklearns = ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_
    for a, b in zip(mine, sklearns, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert ours.loss_curve_[-1] < ours.loss_curve_[0]


# -- pickling --------------------------------------------------------------------
@quiet
@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_pickle_round_trip_gives_identical_predictions_and_training(cls):
    import pickle

    import numpy as np

    X, y = _blobs()
    est = _small(cls).fit(X, y if cls is MLPClassifier else y.astype(float))
    blob = pickle.dumps(est)
    # Host state only: no xpnet model, backend or namespace module is pickled.
    assert "_model" not in est.__getstate__() and "_model" in vars(est)
    for name in (b"xpnet.model", b"xpnet.backend", b"Sequential", b"torch"):
        assert name not in blob
    copy = pickle.loads(blob)
    np.testing.assert_array_equal(copy.predict(X), est.predict(X))
    # Training goes on from the same weights, optimizer state and shuffling.
    target = y if cls is MLPClassifier else y.astype(float)
    est.partial_fit(X, target)
    copy.partial_fit(X, target)
    assert copy.loss_curve_ == est.loss_curve_
    for a, b in zip(copy.coefs_, est.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)


@quiet
def test_unpickled_without_its_device_runs_on_the_cpu_with_a_warning():
    import pickle

    import numpy as np

    X, y = _blobs()
    est = _small().fit(X, y)
    state = est.__getstate__()
    state["_saved"]["backend"] = ("cuda:7", "cupy")  # as if fitted on a GPU
    moved = MLPClassifier.__new__(MLPClassifier)
    moved.__setstate__(pickle.loads(pickle.dumps(state)))
    with pytest.warns(UserWarning, match="running on the CPU with NumPy"):
        labels = moved.predict(X)
    np.testing.assert_array_equal(labels, est.predict(X))


# -- inputs ----------------------------------------------------------------------
@quiet
def test_lists_and_torch_inputs_give_the_same_predictions_as_numpy():
    import numpy as np

    X, y = _blobs()
    reference = _small().fit(X, y).predict_proba(X)
    from_lists = _small().fit(X.tolist(), y.tolist())
    np.testing.assert_array_equal(from_lists.predict_proba(X.tolist()), reference)
    torch = pytest.importorskip("torch")
    # Without array-API dispatch, tensors are converted to NumPy (sklearn's rule).
    from_torch = _small().fit(torch.asarray(X), torch.asarray(y))
    out = from_torch.predict_proba(torch.asarray(X))
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, reference)


@quiet
def test_pandas_inputs_record_feature_names():
    import numpy as np

    pd = pytest.importorskip("pandas")
    X, y = _blobs()
    names = [f"f{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=names)
    est = _small().fit(frame, pd.Series(y))
    assert list(est.feature_names_in_) == names
    reference = _small().fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(est.predict_proba(frame), reference)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        est.predict(X)


@quiet
@pytest.mark.parametrize("namespace", ["torch", "array_api_strict"])
def test_array_api_dispatch_computes_and_answers_in_the_input_namespace(namespace):
    import numpy as np
    import sklearn

    xp = pytest.importorskip(namespace)
    X, y = _blobs()
    reference = _small(dtype="float64").fit(X, y)
    Xa, ya = xp.asarray(X), xp.asarray(y)
    with sklearn.config_context(array_api_dispatch=True):
        est = _small(dtype="float64").fit(Xa, ya)
        labels, proba = est.predict(Xa), est.predict_proba(Xa)
        score = est.score(Xa, ya)
    assert est._model.backend.name == namespace.replace("_", "-")
    assert type(labels) is type(Xa) and type(proba) is type(Xa)
    assert proba.dtype == xp.float64 and labels.dtype == xp.int64
    from xpnet.backend import to_numpy

    np.testing.assert_allclose(to_numpy(proba), reference.predict_proba(X), atol=1e-9)
    np.testing.assert_array_equal(to_numpy(labels), reference.predict(X))
    assert score == reference.score(X, y)


@quiet
def test_dispatch_refuses_predicting_in_another_namespace_than_fit():
    import numpy as np
    import sklearn

    torch = pytest.importorskip("torch")
    X, y = _blobs()
    with sklearn.config_context(array_api_dispatch=True):
        est = _small().fit(torch.asarray(X), torch.asarray(y))
        with pytest.raises(ValueError, match="must use the same namespace") as err:
            est.predict(X)
    assert "\n" not in str(err.value)
    # Without dispatch NumPy input is fine: the torch model converts it.
    assert isinstance(est.predict(X), np.ndarray)


# -- fitting ---------------------------------------------------------------------
def test_partial_fit_needs_classes_first_then_runs_one_epoch_per_call():
    X, y = _blobs()
    est = _small()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(X, y)
    est.partial_fit(X[:30], y[:30], classes=[0, 1, 2])
    est.partial_fit(X, y)
    # scikit-learn's counts: n_iter_ is this call's epochs, t_ all samples seen.
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 2 and est.t_ == 30 + len(X)
    assert list(est.classes_) == [0, 1, 2]
    with pytest.raises(ValueError, match="`y` has classes not in"):
        est.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier"):
        est.partial_fit(X[:, :3], y)


def test_partial_fit_refuses_early_stopping():
    X, y = _blobs()
    with pytest.raises(ValueError, match="partial_fit does not support early_stop"):
        _small(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_fit_stops_when_the_loss_stops_improving_and_warns_only_at_max_iter():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    X, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = _small(max_iter=500, tol=1e-2, n_iter_no_change=3).fit(X, y)
    # Stopped after more than n_iter_no_change epochs without a 1e-2 gain.
    assert 4 <= est.n_iter_ < 500 and len(est.loss_curve_) == est.n_iter_
    assert est.best_loss_ == min(est.loss_curve_)
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\) reached"):
        _small(max_iter=3).fit(X, y)


def test_early_stopping_keeps_the_weights_of_the_best_validation_score():
    import numpy as np

    X, y = _blobs(n=200)
    est = _small(early_stopping=True, max_iter=300, n_iter_no_change=5, alpha=0.9)
    est.fit(X, y)
    # scikit-learn's batch ('auto': up to 200) counts the 180 rows trained on.
    assert est._model.optimizer.weight_decay == pytest.approx(0.9 / 180)
    assert est.n_iter_ < 300 and len(est.validation_scores_) == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.best_loss_ is None
    # The model holds the best epoch's weights: the held-out rows (the same
    # split as scikit-learn's: from random_state after the initial weights,
    # not stratified for 3 classes) score the best validation score.
    from sklearn.model_selection import train_test_split

    state = np.random.RandomState(0)
    est._initial_weights([4, 16, 3], state)
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.1, random_state=state)
    assert est.score(X_val, y_val) == est.best_validation_score_
    assert np.isfinite(est.loss_)


@quiet
def test_warm_start_continues_from_the_fitted_weights():
    import numpy as np

    X, y = _blobs()
    est = _small(max_iter=5, warm_start=True).fit(X, y)
    first = [w.copy() for w in est.coefs_]
    est.fit(X, y)
    # n_iter_ counts this fit's epochs (scikit-learn's), the curve goes on.
    assert est.n_iter_ == 5 and len(est.loss_curve_) == 10 and est.t_ == 10 * len(X)
    assert est.loss_curve_[5] < est.loss_curve_[0]
    cold = _small(max_iter=5).fit(X, y)
    np.testing.assert_array_equal(cold.coefs_[0], first[0])
    assert not np.array_equal(est.coefs_[0], first[0])
    with pytest.raises(ValueError, match="warm_start can only be used where `y`"):
        est.fit(X[y < 2], y[y < 2])
    # Switching early stopping on between warm fits starts its score record.
    est.set_params(early_stopping=True).fit(X, y)
    assert len(est.validation_scores_) == est.n_iter_


@quiet
def test_verbose_prints_scikit_learn_style_iteration_lines(capsys):
    X, y = _blobs()
    _small(max_iter=2, verbose=True).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["Iteration 1", "Iteration 2"]
    assert lines[0].startswith("Iteration 1, loss = ")


@quiet
def test_fitted_attributes():
    X, y = _blobs()
    est = _small(hidden_layer_sizes=(8, 5)).fit(X, y)
    assert [w.shape for w in est.coefs_] == [(4, 8), (8, 5), (5, 3)]
    assert [b.shape for b in est.intercepts_] == [(8,), (5,), (3,)]
    assert (est.n_layers_, est.n_outputs_, est.out_activation_) == (4, 3, "softmax")
    assert est.n_features_in_ == 4 and est.n_iter_ == 30
    assert est._model.dtype_name == "float64"  # X's dtype, as scikit-learn
    assert _small(dtype="float32").fit(X, y)._model.dtype_name == "float32"
    reg = _small(MLPRegressor).fit(X, X[:, :2])
    assert reg.predict(X).shape == (len(X), 2) and reg.out_activation_ == "identity"


# -- bad parameters --------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": -1.0}, "'alpha' parameter of MLPClassifier must be a float in"),
        ({"solver": "newton"}, "'solver' parameter of MLPClassifier must be a str"),
        ({"learning_rate": "cosine"}, "'learning_rate' parameter of MLPClassifier"),
        ({"n_iter_no_change": 0}, "'n_iter_no_change' parameter"),
        ({"max_fun": 0}, "'max_fun' parameter"),
        ({"init": "he"}, "'init' parameter"),
        ({"hidden_layer_sizes": (0,)}, "'hidden_layer_sizes' parameter"),
        ({"activation": "softmax"}, "'activation' parameter"),
        ({"batch_size": 0}, "'batch_size' parameter"),
        ({"max_iter": 1.5}, "'max_iter' parameter of MLPClassifier must be an int"),
        ({"momentum": 1.0}, r"'momentum' parameter .* range \[0.0, 1.0\)"),
        ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
        ({"dtype": "float16"}, "'dtype' parameter"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"random_state": "x"}, "cannot be used to seed"),
    ],
)
def test_bad_parameters_give_one_line_value_errors(params, message):
    X, y = _blobs(n=20)
    est = MLPClassifier(**params)  # accepted here: checked in fit, as sklearn
    with pytest.raises(ValueError, match=message) as err:
        est.fit(X, y)
    assert "\n" not in str(err.value)


# -- issue 20: a drop-in for scikit-learn's MLPs -----------------------------------
def _iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


@pytest.mark.parametrize("learning_rate", ["constant", "invscaling", "adaptive"])
def test_issue20_sgd_follows_scikit_learn_step_for_step(learning_rate):
    """Same initial weights (drawn from random_state as scikit-learn draws
    them), losses, updates, schedules and stopping rule: without shuffling,
    the whole run equals scikit-learn's to rounding."""
    import warnings

    import numpy as np
    from sklearn.neural_network import MLPClassifier as SkClassifier

    X, y = _iris()
    params = dict(
        solver="sgd",
        shuffle=False,
        random_state=0,
        max_iter=40,
        learning_rate=learning_rate,
        learning_rate_init=0.1,
        batch_size=50,
        hidden_layer_sizes=(8,),
        alpha=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = (
            MLPClassifier(**params).fit(X, y),
            SkClassifier(**params).fit(X, y),
        )
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, atol=1e-12)
    mine, sklearns = ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_
    for a, b in zip(mine, sklearns, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("cls_name", ["MLPClassifier", "MLPRegressor"])
def test_issue20_lbfgs_equals_scikit_learns(cls_name):
    """L-BFGS-B on xpnet's loss and gradient (sample weights included) ends
    where scikit-learn's does, after as many iterations."""
    import warnings

    import numpy as np
    import sklearn.neural_network as nn

    import xpnet.sklearn as ours_module

    X, y = _iris()
    if cls_name == "MLPRegressor":
        y = X[:, 0] * 1.0
        X = X[:, 1:]
    weight = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    for max_iter in (3, 15):
        params = dict(
            solver="lbfgs", hidden_layer_sizes=(6,), random_state=1, max_iter=max_iter
        )
        ours = getattr(ours_module, cls_name)(**params)
        theirs = getattr(nn, cls_name)(**params)
        warned = []
        for est in (ours, theirs):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                est.fit(X, y, sample_weight=weight)
            warned.append([str(w.message) for w in caught])
        # The same convergence (scikit-learn's warnings, word for word).
        assert warned[0] == warned[1] and ours.n_iter_ == theirs.n_iter_
        if max_iter == 3:
            assert "lbfgs failed to converge after 3 iteration" in warned[0][0]
        assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
        for a, b in zip(ours.coefs_, theirs.coefs_, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    assert not hasattr(ours, "loss_curve_") and not hasattr(ours, "partial_fit")


def test_issue20_binary_multilabel_and_poisson_outputs_are_scikit_learns():
    import numpy as np
    from sklearn.datasets import make_multilabel_classification

    X, y = _iris()
    binary = MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", random_state=0)
    binary.fit(X, y == 1)
    assert binary.out_activation_ == "logistic" and binary.coefs_[-1].shape == (5, 1)
    proba = binary.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert binary.predict(X).dtype == bool

    Xm, Y = make_multilabel_classification(n_samples=60, random_state=0)
    multi = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(20,), random_state=0)
    multi.fit(Xm, Y)
    assert multi.predict(Xm).shape == Y.shape and multi.n_outputs_ == Y.shape[1]
    assert multi.score(Xm, Y) > 0.9  # subset accuracy, scikit-learn's score

    counts = np.random.default_rng(0).poisson(np.exp(X[:, 0] / 4.0))
    reg = MLPRegressor("poisson", hidden_layer_sizes=(4,), solver="lbfgs")
    reg.set_params(random_state=0).fit(X, counts)
    assert reg.out_activation_ == "exp" and np.all(reg.predict(X) > 0)
    with pytest.raises(ValueError, match="needs non-negative targets"):
        MLPRegressor("poisson").fit(X, -counts - 1.0)


def test_issue20_sparse_input_trains_and_predicts_as_dense():
    import numpy as np
    import scipy.sparse

    X, y = _iris()
    dense = _small(max_iter=5).fit(X, y)
    sparse = _small(max_iter=5).fit(scipy.sparse.csr_matrix(X), y)
    np.testing.assert_array_equal(dense.coefs_[0], sparse.coefs_[0])
    np.testing.assert_array_equal(
        sparse.predict_proba(scipy.sparse.csc_matrix(X)), dense.predict_proba(X)
    )


def test_issue20_coefs_and_intercepts_are_settable():
    """Setting scikit-learn's fitted weights makes the estimator predict as
    scikit-learn's does."""
    import numpy as np
    from sklearn.neural_network import MLPClassifier as SkClassifier

    X, y = _iris()
    theirs = SkClassifier(hidden_layer_sizes=(7,), solver="lbfgs", random_state=3)
    theirs.fit(X, y)
    ours = MLPClassifier(hidden_layer_sizes=(7,), max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning):
        ours.fit(X, y)
    ours.coefs_ = theirs.coefs_
    ours.intercepts_ = theirs.intercepts_
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), 1e-12)
    with pytest.raises(ValueError, match="shape"):
        ours.coefs_ = [w.T for w in theirs.coefs_]
    with pytest.raises(ValueError, match="set coefs_ and intercepts_ on a fitted"):
        MLPClassifier().coefs_ = theirs.coefs_


def test_issue20_n_iter_no_change_inf_trains_every_epoch():
    X, y = _iris()
    est = _small(max_iter=25, tol=1e9, n_iter_no_change=float("inf"))
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(25\)"):
        est.fit(X, y)
    assert est.n_iter_ == 25 and len(est.loss_curve_) == 25


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_issue20_sample_weight_matches_scikit_learn(solver):
    """Weights in the stochastic solvers as scikit-learn weighs them: with one
    batch per epoch the run equals scikit-learn's; weights 2 equal the rows
    given twice; score takes them too."""
    import warnings

    import numpy as np
    from sklearn.neural_network import MLPRegressor as SkRegressor

    X, y = _iris()
    X, y = X[:, 1:], X[:, 0]
    weight = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    params = dict(
        solver=solver,
        shuffle=False,
        random_state=0,
        max_iter=30,
        hidden_layer_sizes=(5,),
        learning_rate_init=0.01,
        alpha=0.01,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPRegressor(**params).fit(X, y, sample_weight=weight)
        theirs = SkRegressor(**params).fit(X, y, sample_weight=weight)
        twice = MLPRegressor(**params).fit(
            np.vstack([X, X[:10]]), np.hstack([y, y[:10]])
        )
        doubled = MLPRegressor(**params).fit(
            X, y, sample_weight=np.r_[np.full(10, 2.0), np.ones(len(y) - 10)]
        )
    rtol = 1e-10 if solver == "sgd" else 1e-3  # Adam's epsilon differs a little
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    np.testing.assert_allclose(twice.loss_curve_, doubled.loss_curve_, rtol=1e-10)
    assert ours.score(X, y, sample_weight=weight) == pytest.approx(
        theirs.score(X, y, sample_weight=weight), abs=1e-2 if solver == "adam" else 1e-9
    )


def test_issue18_item6_stopping_goes_through_the_callback_seam():
    """The estimator stops through fit's callbacks (model.stop_training), not
    by raising from an epoch hook."""
    X, y = _iris()
    est = _small(max_iter=500, tol=10.0, n_iter_no_change=2)
    est.fit(X, y)
    # The first epoch sets best_loss_; it stops at more than 2 stalls in a row.
    assert est.n_iter_ == 4
    assert est._model.stop_training and est._model.stop_reason == "no_improvement"


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_issue20_device_cuda_trains_on_the_gpu_as_on_the_cpu(monkeypatch, solver):
    """device="cuda:1" on CuPy's stand-in (tests/fake_cupy.py, two fake GPUs):
    every array and kernel of the fit and predict stays on GPU 1, and the
    numbers are the CPU's (float64). A real GPU: bench/gpu_check.sh."""
    import fake_cupy
    import numpy as np

    import xpnet
    from xpnet import backend as backend_module

    X, y = _iris()
    weight = np.linspace(0.5, 1.5, len(y))
    params = dict(solver=solver, max_iter=15, hidden_layer_sizes=(6,), random_state=0)
    with pytest.warns(ConvergenceWarning):
        cpu = MLPClassifier(**params).fit(X, y, sample_weight=weight)
    backend_module.probe_cupy.cache_clear()
    cupy = fake_cupy.install(monkeypatch)
    try:
        xpnet.resolve("cuda:1")  # the probe (it runs on GPU 0), then the records
        cupy.reset()
        gpu = MLPClassifier(**params, device="cuda:1")
        with pytest.warns(ConvergenceWarning):
            gpu.fit(X, y, sample_weight=weight)
        proba = gpu.predict_proba(X)
    finally:
        backend_module.probe_cupy.cache_clear()
    assert gpu._model.backend.device_name == "cuda:1"
    assert {device for device, _ in cupy.launches} | set(cupy.allocations) == {1}
    np.testing.assert_allclose(proba, cpu.predict_proba(X), rtol=1e-9, atol=1e-12)
    assert gpu.loss_ == pytest.approx(cpu.loss_, rel=1e-9)


def test_issue20_xpnet_extras_callbacks_and_onnx_export(tmp_path):
    """xpnet's extras beside scikit-learn's parameters: xpnet callbacks run
    in the stochastic solvers' epochs (here a CSV log, a row per epoch), and
    the fitted network exports to ONNX, where ONNX Runtime gives
    predict_proba's numbers."""
    import csv

    import numpy as np

    import xpnet
    from xpnet.callbacks import CSVLogger

    X, y = _iris()
    log = tmp_path / "epochs.csv"
    est = _small(max_iter=4, callbacks=[CSVLogger(log)])
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    rows = list(csv.DictReader(log.open()))
    # The log holds xpnet's data loss; loss_curve_ adds alpha's small L2 term.
    logged = [float(r["loss"]) for r in rows]
    assert logged == pytest.approx(est.loss_curve_, rel=1e-3)
    assert all(a < b for a, b in zip(logged, est.loss_curve_, strict=True))
    assert len(rows) == est.n_iter_ == 4
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "clf.onnx"
    xpnet.export_onnx(est.xpnet_model(), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: X.astype(np.float32)})
    proba = next(o for o in outputs if o.ndim == 2 and o.shape[1] == 3)
    np.testing.assert_allclose(proba, est.predict_proba(X), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="'callbacks' parameter"):
        _small(callbacks="log.csv").fit(X, y)
