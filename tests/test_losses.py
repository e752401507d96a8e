import numpy as np
import pytest
from gradcheck import assert_gradient, numeric_gradient

import xpnet
from xpnet.losses import (
    BinaryCrossEntropy,
    CrossEntropy,
    MeanSquaredError,
    PoissonDeviance,
    get_loss,
)

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0, 2, size=(6, 4))
LABELS = np.array([0, 3, 1, 2, 3, 0])
ONE_HOT = np.eye(4)[LABELS]
SOFT = np.random.default_rng(1).dirichlet(np.ones(4), size=6)
BINARY = (np.random.default_rng(2).random((6, 4)) > 0.5).astype(np.float64)
PROBS = np.random.default_rng(3).uniform(0.05, 0.95, size=(6, 4))
CASES = {
    "ce-logits-labels": (CrossEntropy(), LOGITS, LABELS),
    "ce-logits-onehot": (CrossEntropy(), LOGITS, ONE_HOT),
    "ce-logits-soft": (CrossEntropy(), LOGITS, SOFT),
    "ce-probs-labels": (CrossEntropy(from_logits=False), PROBS, LABELS),
    "bce-logits": (BinaryCrossEntropy(), LOGITS, BINARY),
    "bce-probs": (BinaryCrossEntropy(from_logits=False), PROBS, BINARY),
    "bce-logits-1col": (BinaryCrossEntropy(), LOGITS[:, :1], LABELS % 2),
    "bce-logits-labels": (BinaryCrossEntropy(), LOGITS, LABELS),
    "mse-targets": (MeanSquaredError(), LOGITS, SOFT),
    "mse-labels": (MeanSquaredError(), LOGITS, LABELS),
    "mse-mean-outputs": (MeanSquaredError(outputs="mean"), LOGITS, SOFT),
    "bce-sum-outputs": (BinaryCrossEntropy(outputs="sum"), LOGITS, BINARY),
    "poisson": (PoissonDeviance(), LOGITS, np.floor(PROBS * 5)),
    "poisson-mean-outputs": (PoissonDeviance(outputs="mean"), LOGITS, PROBS * 3),
}
#: sample weights (6,): uneven, one of them 0
WEIGHTS = np.array([0.5, 2.0, 0.0, 1.0, 3.0, 0.25])


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_gradient_matches_finite_differences(backend, case):
    loss, out, y = CASES[case]
    loss.build(backend, "float64")
    y_dev = backend.asarray(y)

    def objective(o):
        return float(xpnet.to_numpy(loss(backend.asarray(o), y_dev)))

    _, grad = loss.value_and_grad(backend.asarray(out), y_dev)
    assert_gradient(
        f"{case}[{backend.name}]",
        xpnet.to_numpy(grad),
        numeric_gradient(objective, out),
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_weighted_loss_gradient_matches_finite_differences(backend, case):
    """sample_weight (issue 20): every loss's weighted mean and its gradient,
    checked in float64 against central differences on every backend."""
    loss, out, y = CASES[case]
    loss.build(backend, "float64")
    y_dev, w_dev = backend.asarray(y), backend.asarray(WEIGHTS)

    def objective(o):
        return float(xpnet.to_numpy(loss.value(backend.asarray(o), y_dev, w_dev)))

    _, grad = loss.value_and_grad(backend.asarray(out), y_dev, w_dev)
    assert_gradient(
        f"weighted-{case}[{backend.name}]",
        xpnet.to_numpy(grad),
        numeric_gradient(objective, out),
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_weighted_loss_is_the_mean_normalised_by_the_weight_sum(numpy_backend, case):
    """sum_n w_n l_n / sum_n w_n: all-ones weights give the unweighted mean,
    integer weights the mean over rows repeated that many times."""
    loss, out, y = CASES[case]
    loss.build(numpy_backend, "float64")
    plain = float(loss.value(out, y))
    ones = float(loss.value(out, y, np.ones(6)))
    assert ones == pytest.approx(plain, rel=1e-12)
    counts = np.array([1, 2, 0, 1, 3, 1])
    repeated = float(loss.value(np.repeat(out, counts, 0), np.repeat(y, counts, 0)))
    assert float(loss.value(out, y, counts * 1.0)) == pytest.approx(repeated, 1e-12)
    np.testing.assert_allclose(
        loss.grad(out, y, 0.5, np.ones(6)), loss.grad(out.copy(), y, 0.5), 1e-12
    )


def test_output_reductions_and_poisson_match_scikit_learns_losses(numpy_backend):
    from scipy.special import xlogy

    def value(loss, out, y):
        loss.build(numpy_backend, "float64")
        return float(loss.value(out, y))

    Y = SOFT
    expected = 0.5 * np.mean((LOGITS - Y) ** 2)
    assert value(MeanSquaredError(outputs="mean"), LOGITS, Y) == pytest.approx(
        expected, rel=1e-12
    )
    p = 1 / (1 + np.exp(-LOGITS))
    expected = -np.mean(np.sum(xlogy(BINARY, p) + xlogy(1 - BINARY, 1 - p), axis=1))
    assert value(BinaryCrossEntropy(outputs="sum"), LOGITS, BINARY) == pytest.approx(
        expected, rel=1e-9
    )
    counts = np.floor(PROBS * 5)
    mu = np.exp(LOGITS)
    expected = np.mean(np.sum(xlogy(counts, counts / mu) - counts + mu, axis=1))
    assert value(PoissonDeviance(), LOGITS, counts) == pytest.approx(expected, 1e-12)
    loss = PoissonDeviance()
    loss.build(numpy_backend, "float64")
    np.testing.assert_allclose(loss.probabilities(LOGITS), mu)
    with pytest.raises(xpnet.XpnetError, match="outputs must be 'sum' or 'mean'"):
        MeanSquaredError(outputs="max")


def _value(loss, out, y, backend):
    loss.build(backend, "float64")
    return float(xpnet.to_numpy(loss(backend.asarray(out), backend.asarray(y))))


def test_cross_entropy_value_matches_direct_formula(numpy_backend):
    p = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(6), LABELS]))
    assert _value(CrossEntropy(), LOGITS, LABELS, numpy_backend) == pytest.approx(
        expected, rel=1e-12
    )
    assert _value(CrossEntropy(), LOGITS, ONE_HOT, numpy_backend) == pytest.approx(
        expected, rel=1e-12
    )


def test_fused_softmax_gradient_is_p_minus_y_over_batch(numpy_backend):
    loss = CrossEntropy()
    loss.build(numpy_backend, "float64")
    _, grad = loss.value_and_grad(LOGITS, LABELS)
    p = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(grad, (p - ONE_HOT) / 6, rtol=1e-12)


def test_mse_uses_half_convention(numpy_backend):
    # One sample, outputs (1, 3) vs targets (0, 1, 1): 1/2 * (1 + 0 + 4) = 2.5.
    out = np.array([[1.0, 1.0, 3.0]])
    y = np.array([[0.0, 1.0, 1.0]])
    assert _value(MeanSquaredError(), out, y, numpy_backend) == 2.5
    # Two samples: the mean over the batch, not the sum.
    assert (
        _value(
            MeanSquaredError(), np.vstack([out, y]), np.vstack([y, y]), numpy_backend
        )
        == 1.25
    )


def test_bce_on_logits_equals_bce_on_probabilities(numpy_backend):
    probs = 1 / (1 + np.exp(-LOGITS))
    a = _value(BinaryCrossEntropy(), LOGITS, BINARY, numpy_backend)
    b = _value(BinaryCrossEntropy(from_logits=False), probs, BINARY, numpy_backend)
    assert a == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize("from_logits", [True, False])
def test_bce_integer_labels_are_one_hot_over_several_outputs(
    numpy_backend, from_logits
):
    out = LOGITS if from_logits else PROBS
    loss = BinaryCrossEntropy(from_logits=from_logits)
    by_label = _value(loss, out, LABELS, numpy_backend)
    assert by_label > 0
    assert by_label == pytest.approx(_value(loss, out, ONE_HOT, numpy_backend))
    # One output: the labels are the 0/1 targets themselves.
    single = _value(loss, out[:, :1], LABELS % 2, numpy_backend)
    assert single == pytest.approx(
        _value(loss, out[:, :1], (LABELS % 2)[:, None] * 1.0, numpy_backend)
    )


def test_bce_correct_agrees_with_its_probabilities(numpy_backend):
    loss = BinaryCrossEntropy()
    loss.build(numpy_backend, "float64")
    p = loss.probabilities(LOGITS)
    for labels in (LABELS, np.argmax(LOGITS, axis=1)):
        assert int(loss.correct(LOGITS, labels)) == np.sum(p.argmax(axis=1) == labels)
    one = LOGITS[:, :1]
    labels = LABELS % 2
    assert int(loss.correct(one, labels)) == np.sum(
        (loss.probabilities(one)[:, 0] > 0.5) == labels
    )


@pytest.mark.parametrize("loss", [CrossEntropy(), BinaryCrossEntropy()])
def test_no_overflow_for_huge_logits(backend, loss):
    loss.build(backend, "float32")
    out = np.array([[1e4, -1e4, 0.0], [-3e4, 2e4, 5.0]], dtype=np.float32)
    y = np.array([0, 2]) if isinstance(loss, CrossEntropy) else np.eye(3)[[0, 2]]
    value, grad = loss.value_and_grad(backend.asarray(out), backend.asarray(y))
    value, grad = float(xpnet.to_numpy(value)), xpnet.to_numpy(grad)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    if isinstance(loss, CrossEntropy):
        # Row 0 is right with certainty, row 1 wrong by 2e4 - 5 nats.
        assert value == pytest.approx((0 + (2e4 - 5.0)) / 2, rel=1e-6)


def test_accuracy_counts_on_device(numpy_backend):
    loss = CrossEntropy()
    loss.build(numpy_backend, "float64")
    correct = int(loss.correct(LOGITS, np.argmax(LOGITS, axis=1)))
    assert correct == 6
    assert int(loss.correct(LOGITS, (np.argmax(LOGITS, axis=1) + 1) % 4)) == 0


@pytest.mark.parametrize(
    "name,cls",
    [
        ("cross-entropy", CrossEntropy),
        ("mse", MeanSquaredError),
        ("bce", BinaryCrossEntropy),
        ("poisson", PoissonDeviance),
        ("categorical_crossentropy", CrossEntropy),
    ],
)
def test_get_loss_by_name(name, cls):
    assert isinstance(get_loss(name), cls)


def test_unknown_loss_lists_choices():
    with pytest.raises(
        xpnet.XpnetError,
        match=r"unknown loss 'hinge': choose one of cross-entropy, mse",
    ):
        get_loss("hinge")
