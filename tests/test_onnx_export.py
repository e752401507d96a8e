"""ONNX export (issue 12.2): the exported graph, run in ONNX Runtime on raw
0-255 pixels, agrees with ``xpnet predict --json`` within 1e-5 (float32) for
every activation xpnet offers and for the CE, BCE and MSE heads.

The matrix trains tiny models (2 epochs on 2,000 mnist-sample rows) and
compares on the first 2,000 test rows; ``test_matrix_on_the_whole_test_set``
(marked slow, about 1 s a case) repeats it on all 10,000 rows of the MNIST
test set, and the command-line test always runs on all 10,000.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import MNIST_DIR
from test_cli import last_json, one_line_error, run

import xpnet
from xpnet.activations import ACTIVATIONS
from xpnet.checkpoint import Checkpoint
from xpnet.cli.main import main
from xpnet.datasets import load_dataset
from xpnet.losses import LOSSES, BinaryCrossEntropy, CrossEntropy
from xpnet.model import LAYER_TYPES
from xpnet.onnx_export import (
    LAYER_BUILDERS,
    OPSET,
    OUTPUT_BUILDERS,
    OnnxExportError,
    export_onnx,
)
from xpnet.preprocessing import Preprocessing, preprocess

ATOL = 1e-5  # float32 agreement asked by the issue


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason="onnx is not installed: pip install onnx")
    return pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed: pip install onnxruntime"
    )


@pytest.fixture(scope="module")
def raw():
    """The bundled sample: uint8 pixels; its test set is MNIST's whole one."""
    return load_dataset("mnist-sample")


def run_onnx(ort, proto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"input": np.asarray(x, dtype=np.float32)})[0]


def predict_json(capsys, ckpt_path, x_path) -> list[dict]:
    """``xpnet predict MODEL X.npy --json`` (in-process) -> its results."""
    capsys.readouterr()
    code = main(["predict", str(ckpt_path), str(x_path), "--device", "cpu", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return last_json(out.out)["results"]


def reported(results: list[dict]) -> np.ndarray:
    """What predict reported per row: probabilities, or a regressor's values."""
    key = "values" if "values" in results[0] else "probabilities"
    return np.array([r[key] for r in results])


# name -> (layers after the input, loss, targets: "labels" | "binary" | "values",
#          standardize)
HEADS = {
    "ce": ("relu", "cross_entropy", "labels", False),
    "ce-standardized": ("relu", "cross_entropy", "labels", True),
    "bce": ("relu", "bce", "labels", True),
    "bce-one-output": ("relu", "bce", "binary", False),
    "mse": ("relu", "mse", "labels", False),
    "mse-regressor": ("tanh", "mse", "values", True),
    "bce-regressor": ("relu", "bce", "values", False),
    "softmax-layer-ce-on-probabilities": ("relu", "ce-probs", "labels", False),
    "sigmoid-output-mse": ("relu", "mse-sigmoid-output", "labels", False),
}
# every activation class xpnet offers, once (by its first name in the table),
# as the hidden activation under cross-entropy
ACTIVATION_KEYS: dict[str, str] = {}
for _key, _cls in ACTIVATIONS.items():
    ACTIVATION_KEYS.setdefault(_cls.__name__, _key)
ACTIVATION_CASES = {
    f"act-{key}": (key, "cross_entropy", "labels", i % 2 == 1)
    for i, key in enumerate(ACTIVATION_KEYS.values())
}
CASES = {**ACTIVATION_CASES, **HEADS}


def build(activation: str, loss: str, targets: str) -> xpnet.Sequential:
    sizes = [784, 32, 1 if targets in ("binary", "values") else 10]
    if loss == "ce-probs":
        return xpnet.mlp(
            sizes,
            activation,
            output_activation="softmax",
            loss=CrossEntropy(from_logits=False),
            device="cpu",
        )
    if loss == "mse-sigmoid-output":
        return xpnet.mlp(
            sizes, activation, output_activation="sigmoid", loss="mse", device="cpu"
        )
    return xpnet.mlp(sizes, activation, loss=loss, device="cpu")


@pytest.fixture(scope="module")
def trained(raw, tmp_path_factory):
    """case name -> checkpoint path, trained once per module."""
    tmp = tmp_path_factory.mktemp("onnx")
    cache: dict[str, object] = {}

    def get(case: str):
        if case not in cache:
            activation, loss, targets, standardize = CASES[case]
            ds = preprocess(raw, standardize=standardize)
            y = ds.y_train[:2000].astype(np.int64)
            if targets == "binary":
                y = y % 2
            elif targets == "values":
                y = y.astype(np.float32) / 9  # a regression target in [0, 1]
            model = build(activation, loss, targets)
            model.fit(ds.x_train[:2000], y, epochs=2, batch_size=64)
            path = tmp / f"{case}.npz"
            Checkpoint(model, Preprocessing.of(ds), dataset={"name": "s"}).to_file(path)
            cache[case] = path
        return cache[case]

    return get


@pytest.fixture(scope="module")
def test_rows(raw, tmp_path_factory):
    """n -> an (n, 784) uint8 .npy of raw test pixels, and the array."""
    tmp = tmp_path_factory.mktemp("rows")

    def get(n: int):
        path = tmp / f"x{n}.npy"
        x = raw.x_test[:n]
        if not path.exists():
            np.save(path, x)
        return path, x

    return get


def check_case(ort, capsys, trained, test_rows, case: str, n: int) -> None:
    ckpt = trained(case)
    x_path, x = test_rows(n)
    expected = reported(predict_json(capsys, ckpt, x_path))
    proto = export_onnx(ckpt)
    got = run_onnx(ort, proto, x)
    assert got.shape == expected.shape and len(got) == n
    np.testing.assert_allclose(got, expected, rtol=ATOL, atol=ATOL)
    output = "values" if CASES[case][2] == "values" else "probabilities"
    assert proto.graph.output[0].name == output
    # not a trivial agreement: the outputs vary from row to row
    assert float(np.max(np.std(got, axis=0))) > 0.01


@pytest.mark.parametrize("case", CASES)
def test_onnx_runtime_agrees_with_predict_json(ort, capsys, trained, test_rows, case):
    check_case(ort, capsys, trained, test_rows, case, 2000)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_matrix_on_the_whole_test_set(ort, capsys, trained, test_rows, case):
    check_case(ort, capsys, trained, test_rows, case, 10_000)


def test_the_cases_cover_every_activation_and_loss():
    covered = {ACTIVATIONS[activation].__name__ for activation, *_ in CASES.values()}
    assert covered == {cls.__name__ for cls in ACTIVATIONS.values()}
    assert {loss for _, loss, _, _ in CASES.values()} >= {"cross_entropy", "bce", "mse"}


def test_every_layer_and_loss_has_a_builder():
    """A new activation or loss without an ONNX entry fails here, not silently."""
    assert set(LAYER_TYPES) <= set(LAYER_BUILDERS)
    assert {cls.__name__ for cls in LOSSES.values()} <= set(OUTPUT_BUILDERS)


@pytest.mark.parametrize("name", sorted({c.__name__ for c in ACTIVATIONS.values()}))
def test_extreme_pre_activations_agree(ort, name):
    """Inputs from 1e-4 to 10 times weights x50: activations near 0 and far into
    their tails (overflow-prone exp, tanh saturation, softplus's log) agree with
    the model's own output."""
    activation = next(c for c in ACTIVATIONS.values() if c.__name__ == name)()
    model = xpnet.Sequential(
        [xpnet.Dense(20, 16), activation, xpnet.Dense(16, 10)], device="cpu", seed=1
    )
    state = {k: v * 50 for k, v in model.state_dict().items()}
    state["0.b"] = np.linspace(-0.5, 0.5, 16, dtype=np.float32)
    model.load_state_dict(state)
    # rows from tiny to huge: the middle of each function and its tails
    x = (
        np.random.default_rng(0).normal(0, 1, (64, 20))
        * np.logspace(-4, 1, 64)[:, None]
    )
    x = x.astype(np.float32)
    np.testing.assert_allclose(
        run_onnx(ort, export_onnx(model), x), model.predict_proba(x), atol=ATOL, rtol=0
    )


def test_graph_states_opset_dynamic_batch_and_metadata(ort, trained):
    proto = export_onnx(trained("ce-standardized"))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [
        OPSET
    ]
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "input" and dims[0].dim_param == "N" and dims[1].dim_value == 784
    assert inp.type.tensor_type.elem_type == 1  # FLOAT
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["task"] == "classification"
    assert json.loads(props["preprocessing"])["standardize"] is True


def test_float64_model_exports_in_float32(ort):
    model = xpnet.mlp([30, 16, 4], "gelu", dtype="float64", device="cpu")
    x = np.random.default_rng(0).normal(size=(40, 30))
    proto = export_onnx(model)
    assert {t.data_type for t in proto.graph.initializer} == {1}  # FLOAT
    np.testing.assert_allclose(
        run_onnx(ort, proto, x), model.predict_proba(x), atol=ATOL, rtol=0
    )


def test_bce_from_logits_false_output_is_not_mapped_again(ort):
    model = xpnet.mlp(
        [5, 3],
        output_activation="sigmoid",
        loss=BinaryCrossEntropy(from_logits=False),
        device="cpu",
    )
    x = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    np.testing.assert_allclose(
        run_onnx(ort, export_onnx(model), x), model.predict_proba(x), atol=ATOL
    )


def test_deskewed_model_is_refused_in_one_line(ort, trained, tmp_path, capsys):
    ckpt = Checkpoint.from_file(trained("ce"), "cpu")
    ckpt.preprocessing = Preprocessing(deskew=True, scale=255.0, image_shape=(28, 28))
    ckpt.to_file(tmp_path / "d.npz")
    with pytest.raises(OnnxExportError, match="deskew"):
        export_onnx(ckpt)
    capsys.readouterr()
    assert main(["export", str(tmp_path / "d.npz"), str(tmp_path / "d.onnx")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--deskew" in err
    assert not (tmp_path / "d.onnx").exists()


def test_unknown_layer_is_a_clear_error(ort):
    class Cube(xpnet.Layer):
        def forward(self, x):
            return x * x * x

    model = xpnet.Sequential([xpnet.Dense(4, 3), Cube()], device="cpu")
    with pytest.raises(OnnxExportError, match="no builder for it.*LAYER_BUILDERS"):
        export_onnx(model)


def test_without_onnx_export_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(OnnxExportError, match=r"pip install 'xpnet\[onnx\]'"):
        export_onnx(xpnet.mlp([4, 2], device="cpu"))
    capsys.readouterr()
    assert main(["export", "m.npz", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "xpnet: error: exporting to ONNX needs the onnx package: "
        "pip install 'xpnet[onnx]'"
    ]


def test_library_writes_the_file(ort, trained, tmp_path):
    import onnx

    proto = export_onnx(str(trained("bce")), tmp_path / "sub" / "m.onnx")
    assert onnx.load(tmp_path / "sub" / "m.onnx") == proto


def test_cli_export_on_the_whole_mnist_test_set(ort, tmp_path):
    """The console script end to end, on all 10,000 MNIST test images."""
    if (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        from xpnet.idx import read_idx

        x = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz").reshape(10_000, -1)
    else:  # the bundled sample's test set is the same 10,000 images
        x = load_dataset("mnist-sample").x_test
    assert x.shape == (10_000, 784) and x.dtype == np.uint8
    np.save(tmp_path / "x.npy", x)
    train = run(
        "train",
        "--dataset",
        "mnist-sample",
        "--device",
        "cpu",
        "--hidden",
        "32",
        "--activation",
        "gelu",
        "--epochs",
        "1",
        "--standardize",
        "--save",
        "m.npz",
        "--quiet",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    proc = run("export", "m.npz", "m.onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"opset {OPSET}" in proc.stdout
    predict = run(
        "predict", "m.npz", "x.npy", "--device", "cpu", "--json", cwd=tmp_path
    )
    assert predict.returncode == 0, predict.stderr
    expected = reported(last_json(predict.stdout)["results"])

    import onnx

    got = run_onnx(ort, onnx.load(tmp_path / "m.onnx"), x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)

    # an existing output is kept unless --overwrite
    before = (tmp_path / "m.onnx").read_bytes()
    proc = run("export", "m.npz", "m.onnx", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--overwrite" in one_line_error(proc)
    assert (tmp_path / "m.onnx").read_bytes() == before
    proc = run("export", "m.npz", "m.onnx", "--overwrite", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout)["result"]["name"] == "probabilities"


def test_predict_json_reports_full_precision_probabilities(trained, capsys, tmp_path):
    """Not rounded to 6 decimals: exactly the model's float32 values."""
    x = load_dataset("mnist-sample").x_test[:50]
    np.save(tmp_path / "x.npy", x)
    results = predict_json(capsys, trained("ce"), tmp_path / "x.npy")
    ckpt = Checkpoint.from_file(trained("ce"), "cpu")
    exact = ckpt.model.predict_proba(ckpt.preprocessing.apply(x))
    assert np.array_equal(reported(results), exact.astype(np.float64))


@pytest.mark.parametrize("name", ["m.npz.json", "x.npy", "train.gz", "m.png"])
def test_export_refuses_a_name_not_ending_in_onnx(ort, trained, tmp_path, capsys, name):
    # with --overwrite this used to replace the checkpoint's .json copy or the
    # training data (e.g. an IDX .gz) with an ONNX graph
    victim = tmp_path / name
    victim.write_bytes(b"keep me")
    args = ["export", str(trained(next(iter(CASES)))), str(victim), "--overwrite"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".onnx" in err, err
    assert victim.read_bytes() == b"keep me"
