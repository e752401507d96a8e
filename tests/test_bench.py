"""Unit tests of the benchmark harness (xpnet.bench): FLOP counting, the
environment record, table formatting, the JSON schema, option errors and the
messages for skipped peers. The runs here are tiny; timings are not checked."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet import bench as B
from xpnet.bench import plan as bench_plan
from xpnet.bench import timing
from xpnet.bench.runners import denormal_fraction
from xpnet.errors import XpnetError

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xpnet")
    sub = parser.add_subparsers(dest="command")
    B.add_bench_parser(sub)
    return parser.parse_args(["bench", *argv])


# --------------------------------------------------------------------------- FLOPs


def test_epoch_flops_mlp512_matches_the_benchmarking_note():
    flops = B.epoch_flops((784, 512, 512, 10), 60_000)
    weights = 784 * 512 + 512 * 512 + 512 * 10
    assert flops["forward"] == 2 * 60_000 * weights
    assert flops["backward"] == 4 * 60_000 * weights - 2 * 60_000 * 784 * 512
    assert flops["total"] == 192_552_960_000  # "192.6 GFLOP per epoch"


def test_epoch_flops_seed_and_wide():
    seed = B.epoch_flops(B.MODELS["seed"], 100)
    p = 784 * 16 + 16 * 16 + 16 * 16 + 16 * 10
    assert seed["total"] == 6 * 100 * p - 2 * 100 * 784 * 16
    wide = B.epoch_flops(B.MODELS["wide"], 60_000)["total"]
    assert 6.7e12 < wide < 7.3e12


def test_epoch_flops_is_linear_in_rows_and_rejects_bad_sizes():
    a = B.epoch_flops((784, 512, 10), 1000)["total"]
    assert B.epoch_flops((784, 512, 10), 3000)["total"] == 3 * a
    with pytest.raises(XpnetError):
        B.epoch_flops((784,), 10)
    with pytest.raises(XpnetError):
        B.epoch_flops((784, 0, 10), 10)


def test_weight_count():
    assert B.weight_count((784, 512, 512, 10)) == 669_706


# --------------------------------------------------------------------------- data


def test_real_data_is_mnist_scaled_and_tiled():
    X, y, text = B.load_data(20_000)
    assert X.shape == (20_000, 784) and X.dtype == np.float32
    assert y.shape == (20_000,) and y.dtype == np.int64
    assert 0.0 <= X.min() and X.max() <= 1.0
    assert set(np.unique(y)) == set(range(10))
    assert np.array_equal(X[:5000], X[15_000:20_000])  # tiled after 15k images
    assert text == "real MNIST (15k images tiled to 20,000)"


def test_synthetic_data_has_class_structure():
    X, y, text = B.load_data(5000, synthetic=True)
    assert "synthetic" in text and X.dtype == np.float32
    means = np.stack([X[y == k].mean(axis=0) for k in range(10)])
    # class centres stand apart (not uniform noise): distance >> sampling noise
    assert np.linalg.norm(means[0] - means[1]) > 10
    assert not (0 <= X.min() and X.max() <= 1)  # not uniform [0, 1) data


# --------------------------------------------------------------------------- env


def test_environment_records_machine_and_versions():
    env = B.environment(["cpu"])
    dt.datetime.fromisoformat(env["date"])
    assert env["cpu_model"] and env["cpu_count"] >= 1 and env["cpu_affinity"] >= 1
    v = env["versions"]
    for key in ("python", "numpy", "array_api_compat", "cupy", "torch", "sklearn"):
        assert key in v
    assert v["xpnet"] == xpnet.__version__
    assert v["numpy"] == np.__version__
    assert env["gpus"] == []
    if HAVE_TORCH:
        assert v["torch"] and env["torch_threads"] >= 1
    json.dumps(env)  # JSON-ready


def test_environment_of_an_unusable_gpu_records_the_error():
    env = B.environment(["cpu", "cuda:7"])
    (entry,) = env["gpus"]  # no machine here has 8 GPUs
    assert entry["device"] == "cuda:7" and entry["error"] and "name" not in entry


# --------------------------------------------------------------------------- peers


def test_peer_messages_say_why_each_peer_was_skipped(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return None if name == "torch" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    lines = B.peer_messages(["pytorch", "sklearn"], ["cpu", "cuda:0"])
    assert "pytorch: skipped (torch not installed)" in lines
    assert "sklearn: skipped on cuda:0 (CPU only)" in lines
    assert lines.count("pytorch: skipped (torch not installed)") == 1


def test_peers_not_requested_are_reported():
    lines = B.peer_messages([], ["cpu"])
    assert lines == [
        "pytorch: skipped (not requested with --peers)",
        "sklearn: skipped (not requested with --peers)",
        "numpy: skipped (not requested with --peers)",
        "jax: skipped (not requested with --peers)",
    ]


def test_sklearn_missing_is_reported(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a, **k: None if n == "sklearn" else real(n, *a, **k),
    )
    assert B.peer_skip_reason("sklearn", "cpu") == (
        "skipped (scikit-learn not installed)"
    )


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_on_a_missing_gpu_is_skipped_with_a_reason(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = B.peer_skip_reason("pytorch", "cuda:0")
    assert reason == "skipped on cuda:0 (this torch build sees no CUDA GPU)"
    assert B.peer_skip_reason("pytorch", "cpu") is None


def test_make_runners_lists_skipped_peers():
    X, y, _ = B.load_data(64)
    runners, skipped = B.make_runners(
        B.MODELS["seed"], X, y, 32, xpnet.resolve("cpu"), peers=[]
    )
    assert list(runners) == ["xpnet"]
    assert set(skipped) == {
        "pytorch",
        "sklearn",
        "numpy",
        "jax",
        "pytorch-graph",
        "xpnet-graph",
    }


def test_numpy_and_jax_peers_are_cpu_only_and_jax_missing_is_reported(monkeypatch):
    assert B.peer_skip_reason("numpy", "cpu") is None
    assert B.peer_skip_reason("numpy", "cuda:0") == "skipped on cuda:0 (CPU only)"
    assert B.peer_skip_reason("jax", "cuda:1") == (
        "skipped on cuda:1 (CPU only in this benchmark)"
    )
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a, **k: None if n == "jax" else real(n, *a, **k),
    )
    assert B.peer_skip_reason("jax", "cpu") == (
        "skipped (jax not installed: pip install 'xpnet[bench]')"
    )
    assert "jax: skipped (jax not installed: pip install 'xpnet[bench]')" in (
        B.peer_messages(["jax"], ["cpu"])
    )


def test_jax_threads_are_pinned_only_when_one_thread_is_asked_for(monkeypatch):
    from xpnet.bench import peers

    for var in peers.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert peers.pin_jax_threads(worker=False).startswith("jax threads: not pinned")
    assert "XLA_FLAGS" not in os.environ
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    assert peers.requested_threads() == 1
    assert peers.pin_jax_threads(worker=False) == (
        "jax threads: XLA_FLAGS only (no CPU binding in-process)"
    )
    assert os.environ["XLA_FLAGS"] == (
        "--xla_dump_to=/tmp/x " + peers.XLA_ONE_THREAD_FLAGS
    )
    assert peers.pin_jax_threads(worker=True).endswith("CPU set like every system")
    assert os.environ["XLA_FLAGS"].count("multi_thread_eigen") == 1


# --------------------------------------------------------------------------- runners


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_peer_starts_from_xpnet_weights_and_takes_the_same_step():
    import torch

    X, y, _ = B.load_data(64)
    sizes = (784, 32, 16, 10)
    runners, _ = B.make_runners(sizes, X, y, 64, xpnet.resolve("cpu"), ["pytorch"])
    xr, tr = runners["xpnet"], runners["pytorch"]
    model = xr.model
    with torch.no_grad():
        out_t = tr.net(torch.from_numpy(X[:8])).numpy()
    out_x = xpnet.to_numpy(model.forward(model.to_device(X[:8])))
    np.testing.assert_allclose(out_t, out_x, rtol=1e-5, atol=1e-5)
    # One SGD-momentum step on the same batch gives the same weights.
    model.train_step(model.to_device(X), model.to_device(y))
    tr.opt.zero_grad()
    torch.nn.functional.cross_entropy(tr.net(tr.X), tr.y).backward()
    tr.opt.step()
    W_t = tr.net[0].weight.detach().numpy().T
    np.testing.assert_allclose(W_t, model.state_dict()["0.W"], rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn is not installed")
def test_sklearn_partial_fit_is_one_full_pass_from_xpnet_weights():
    X, y, _ = B.load_data(300)
    sizes = (784, 16, 10)
    runners, _ = B.make_runners(sizes, X, y, 64, xpnet.resolve("cpu"), ["sklearn"])
    state = runners["xpnet"].initial_state()
    clf = runners["sklearn"].clf
    np.testing.assert_array_equal(clf.coefs_[0], state["0.W"])
    assert clf.coefs_[0].dtype == np.float32
    assert all(not v.any() for v in clf._optimizer.velocities)
    t0 = clf.t_
    loss = runners["sklearn"].run_epoch()
    assert clf.t_ - t0 == 300  # one pass over every sample (5 batches, last partial)
    assert clf.n_iter_ == 1 and math.isfinite(loss)
    assert clf.coefs_[0].dtype == np.float32


@pytest.mark.parametrize("peer", ["numpy", "jax"])
def test_hand_peers_take_xpnets_first_two_steps_from_the_same_weights(peer):
    if peer == "jax" and not HAVE_JAX:
        pytest.skip("jax is not installed")
    X, y, _ = B.load_data(48)
    sizes = (784, 16, 12, 10)
    runners, _ = B.make_runners(sizes, X, y, 48, xpnet.resolve("cpu"), [peer])
    xr, pr = runners["xpnet"], runners[peer]
    start = xr.initial_state()
    np.testing.assert_array_equal(pr.weights()["2.W"], start["2.W"])
    model = xr.model
    # Two steps on one batch: the second also checks the momentum term.
    for _ in range(2):
        model.train_step(model.to_device(X), model.to_device(y))
        pr.train_step(X, y)
    want, got = model.state_dict(), pr.weights()
    for key in start:
        update = want[key] - start[key]
        assert np.abs(update).max() > 1e-4, key  # the step moved this parameter
        assert got[key].dtype == np.float32
        np.testing.assert_allclose(
            got[key] - start[key], update, rtol=0, atol=1e-3 * np.abs(update).max()
        )


@pytest.mark.parametrize("peer", ["numpy", "jax"])
def test_hand_peers_learn_over_two_epochs_with_the_last_partial_batch(peer):
    if peer == "jax" and not HAVE_JAX:
        pytest.skip("jax is not installed")
    X, y, _ = B.load_data(200)
    runners, _ = B.make_runners((784, 16, 10), X, y, 64, xpnet.resolve("cpu"), [peer])
    r = runners[peer]
    first, second = r.run_epoch(), r.run_epoch()
    assert 0 < second < first < 3.0
    assert B.runner_extras(r)["optimizer_denormal_fraction"] == 0.0
    r.close()


def test_numpy_and_jax_draw_the_same_batches_and_agree_over_an_epoch():
    if not HAVE_JAX:
        pytest.skip("jax is not installed")
    X, y, _ = B.load_data(100)
    runners, _ = B.make_runners(
        (784, 16, 10), X, y, 32, xpnet.resolve("cpu"), ["numpy", "jax"]
    )
    assert runners["numpy"].run_epoch() == pytest.approx(
        runners["jax"].run_epoch(), rel=1e-4
    )
    np.testing.assert_allclose(
        runners["numpy"].weights()["0.W"], runners["jax"].weights()["0.W"], atol=1e-5
    )


def test_xpnet_runner_reports_fit_overheads():
    X, y, _ = B.load_data(256)
    runners, _ = B.make_runners(B.MODELS["seed"], X, y, 128, xpnet.resolve("cpu"), [])
    r = runners["xpnet"]
    t = B.timed_epoch(r)
    assert t.seconds > 0 and 0 < t.loss < 3
    extras = B.runner_extras(r)
    assert extras["input_checks_s"] > 0 and extras["fit_loop_s"] > 0
    # two updates from fresh state leave no velocity in the denormal range
    assert extras["optimizer_denormal_fraction"] == 0.0


def test_denormal_fraction_counts_nonzero_denormals_only():
    tiny32 = np.finfo(np.float32).smallest_normal
    a = np.array([1.0, tiny32 / 4, 0.0, tiny32], dtype=np.float32)
    b = np.array([np.finfo(np.float64).smallest_normal / 2, 1.0], dtype=np.float64)
    assert denormal_fraction([a, b]) == 2 / 6
    assert denormal_fraction([]) == 0.0


# --------------------------------------------------------------------------- timing


class FakeSystem:
    def __init__(self, timings):
        self.timings = list(timings)

    def epoch(self):
        return self.timings.pop(0)


def test_time_runners_discards_contended_epochs(monkeypatch):
    monkeypatch.setattr(timing, "wait_for_quiet", lambda *a, **k: 0.0)
    ok = B.EpochTiming(1.0, 0.5, 0.0)
    busy = B.EpochTiming(5.0, 0.5, 1.5)
    fake = FakeSystem([ok, busy, ok, ok, ok])  # warm-up, then 1 discarded
    out = B.time_runners({"xpnet": fake}, repeats=3, warmup=1)["xpnet"]
    assert out["times"] == [1.0, 1.0, 1.0] and out["median_s"] == 1.0
    assert out["discarded"] == [{"seconds": 5.0, "foreign_cores": 1.5}]
    assert out["contended"] is False


def test_time_runners_keeps_and_flags_after_max_retries(monkeypatch):
    monkeypatch.setattr(timing, "wait_for_quiet", lambda *a, **k: 0.0)
    busy = B.EpochTiming(5.0, 0.5, 1.5)
    fake = FakeSystem([busy] * 4)
    out = B.time_runners({"x": fake}, repeats=3, warmup=0, max_retries=1)["x"]
    assert len(out["discarded"]) == 1 and out["times"] == [5.0, 5.0, 5.0]
    assert out["contended"] is True


def test_foreign_cores_and_contention_threshold():
    hz = timing.TICKS_PER_S
    assert B.foreign_cores((0, 0), (2 * hz, hz), 1.0) == pytest.approx(1.0)
    assert B.foreign_cores(None, (1, 1), 1.0) is None
    assert B.contended(1.0, 1.0)
    assert not B.contended(0.1, 1.0)
    assert not B.contended(1.0, 0.01)  # a tick or two: below the granularity
    assert B.cpu_ticks() is None or len(B.cpu_ticks()) == 2


# --------------------------------------------------------------------------- tables


def fake_row(
    batch=128,
    xpnet_s=2.0,
    torch_s=1.0,
    sklearn_s=4.0,
    contended=False,
    numpy_s=1.6,
    jax_s=2.5,
):
    def timing(s):
        return {"times": [s, s * 1.1, s * 0.9], "median_s": s, "losses": [0.5]}

    timings = {"xpnet": timing(xpnet_s)}
    if torch_s is not None:
        timings["pytorch"] = timing(torch_s)
    if sklearn_s is not None:
        timings["sklearn"] = timing(sklearn_s)
    if numpy_s is not None:
        timings["numpy"] = timing(numpy_s)
    if jax_s is not None:
        timings["jax"] = timing(jax_s)
    if contended:
        timings["xpnet"]["contended"] = True
    gemm = {"xpnet": {"gflops": 100.0}, "pytorch": {"gflops": 200.0}}
    return B.make_row("mlp512", B.MODELS["mlp512"], "cpu", batch, 60_000, timings, gemm)


def test_make_row_derives_rates_and_ratios():
    row = fake_row()
    x = row["systems"]["xpnet"]
    assert x["gflops"] == pytest.approx(192.55296 / 2.0)
    assert x["pct_gemm"] == pytest.approx(100 * 96.27648 / 100.0)
    assert row["systems"]["pytorch"]["pct_gemm"] == pytest.approx(
        100 * 192.55296 / 200.0
    )
    assert x["samples_per_s"] == pytest.approx(30_000)
    assert row["ratio_xpnet_torch"] == pytest.approx(2.0)
    assert row["ratio_xpnet_sklearn"] == pytest.approx(0.5)
    assert row["ratio_xpnet_numpy"] == pytest.approx(1.25)
    assert row["ratio_xpnet_jax"] == pytest.approx(0.8)
    assert row["steps_per_epoch"] == math.ceil(60_000 / 128)
    assert row["contended"] is False


def test_format_table_text_and_markdown():
    rows = [
        fake_row(32),
        fake_row(
            1024,
            torch_s=None,
            sklearn_s=None,
            numpy_s=None,
            jax_s=None,
            contended=True,
        ),
    ]
    text = B.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == [
        "batch",
        "xpnet",
        "s",
        "samples/s",
        "GFLOP/s",
        "%",
        "GEMM",
        "torch",
        "s",
        "xpnet/torch",
        "sklearn",
        "s",
        "xpnet/sklearn",
        "numpy",
        "s",
        "xpnet/numpy",
        "jax",
        "s",
        "xpnet/jax",
    ]
    assert lines[1].split() == [
        "32", "2.000", "30,000", "96.3", "96", "1.000", "2.00", "4.000", "0.50",
        "1.600", "1.25", "2.500", "0.80",
    ]  # fmt: skip
    assert lines[2].split()[0] == "1024*" and lines[2].split()[-1] == "-"
    assert len({len(line) for line in lines}) == 1  # aligned columns
    md = B.format_table(rows, markdown=True).splitlines()
    assert md[0].startswith("| batch | xpnet s |") and md[1].startswith("|---:|")
    assert md[2] == (
        "| 32 | 2.000 | 30,000 | 96.3 | 96 | 1.000 | 2.00 | 4.000 | 0.50 "
        "| 1.600 | 1.25 | 2.500 | 0.80 |"
    )


def test_output_stem():
    assert B.output_stem(["cpu"], "2026-11-22") == "cpu-2026-11-22"
    assert B.output_stem(["cpu", "cuda:0"], "2026-11-22") == "cpu+cuda0-2026-11-22"


def test_add_row_replaces_the_same_key():
    result = {"rows": [fake_row(32), fake_row(64)]}
    B.add_row(result, fake_row(32, xpnet_s=9.0))
    assert [r["batch_size"] for r in result["rows"]] == [64, 32]
    assert result["rows"][-1]["systems"]["xpnet"]["median_s"] == 9.0


# --------------------------------------------------------------------------- options


def test_defaults_and_quick_plan():
    plan = B.plan_from_args(parse("--device", "cpu"))
    assert plan.devices == ["cpu"] and plan.models == list(B.MODELS)
    assert plan.batch_sizes["seed"] == list(B.BATCH_SIZES)
    assert plan.rows == {m: 60_000 for m in B.MODELS}
    assert plan.repeats == 3
    # and PyTorch in a CUDA graph, which runs on GPUs only
    assert plan.peers == ["pytorch", "sklearn", "numpy", "jax", "pytorch-graph"]
    quick = B.plan_from_args(parse("--device", "cpu", "--quick"))
    assert quick.rows == {"seed": 10_000, "mlp512": 10_000, "wide": 256}
    assert quick.batch_sizes["mlp512"] == [128, 1024]
    assert quick.batch_sizes["wide"] == [128]


def test_options_select_models_sizes_and_peers():
    args = parse(
        "--device=cpu",
        "--models",
        "mlp512,wide",
        "--batch-sizes",
        "512,64,64",
        "--batch-sizes-for",
        "wide=8192,128",
        "--peers",
        "torch",
        "--repeats",
        "5",
    )
    plan = B.plan_from_args(args)
    assert plan.models == ["mlp512", "wide"]
    assert plan.batch_sizes == {"mlp512": [64, 512], "wide": [8192, 128]}
    assert plan.peers == ["pytorch"] and plan.repeats == 5
    assert args.func is B.run_bench


@pytest.mark.parametrize(
    "argv",
    [
        ("--models", "resnet"),
        ("--models", ""),
        ("--repeats", "2"),
        ("--batch-sizes", "0,32"),
        ("--batch-sizes", "big"),
        ("--batch-sizes-for", "wide"),
        ("--batch-sizes-for", "vgg=32"),
        ("--peers", "tensorflow"),
        ("--device", "quantum"),
        ("--rows", "0"),
        ("--warmup", "-1"),
        ("--max-retries", "-1"),
    ],
)
def test_bad_options_raise_one_line_xpnet_errors(argv):
    with pytest.raises(XpnetError) as info:
        B.plan_from_args(parse("--device", "cpu", *argv) if "--device" not in argv
                         else parse(*argv))  # fmt: skip
    assert "\n" not in str(info.value)


def test_main_maps_bad_options_to_exit_2(capsys):
    assert B.main(["--device", "cpu", "--models", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'nope'")


@pytest.mark.parametrize(
    "found,devices,notes",
    [
        ((None, 0, "CuPy is not installed"), ["cpu"], ["cuda: not benchmarked "
                                                       "(CuPy is not installed)"]),
        ((object(), 2, ""), ["cpu", "cuda:0", "cuda:1"], []),
    ],
)  # fmt: skip
def test_device_all_is_the_cpu_plus_usable_gpus_with_a_note_when_none(
    monkeypatch, found, devices, notes
):
    monkeypatch.setattr(xpnet.backend, "cupy_gpu_count", lambda: found)
    got_notes: list[str] = []
    assert B.parse_devices("all", got_notes) == devices
    assert got_notes == notes
    assert B.parse_devices("cpu,cpu") == ["cpu"]


def test_peers_none():
    assert B.parse_peers("none") == []
    assert B.parse_peers("sklearn,torch") == ["sklearn", "pytorch"]
    assert B.parse_peers("jax, NumPy") == ["jax", "numpy"]


def _python(*argv: str) -> subprocess.CompletedProcess:
    """Run this interpreter on this checkout's xpnet."""
    src = str(Path(xpnet.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=120,
    )


def test_the_cli_parser_loads_only_the_light_bench_modules():
    code = (
        "import json, sys; from xpnet.cli import build_parser; build_parser(); "
        "bench = sorted(m for m in sys.modules if m.startswith('xpnet.bench')); "
        "peers = [m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules]; "
        "print(json.dumps([bench, peers]))"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    bench, peers = json.loads(done.stdout)
    assert bench == ["xpnet.bench", "xpnet.bench.cli", "xpnet.bench.plan"]
    assert "xpnet.bench.runners" not in bench and peers == []


def test_package_exports_resolve_to_their_modules():
    # e.g. B.environment is the function, not the module that defines it
    for name in B.__all__:
        assert not isinstance(getattr(B, name), types.ModuleType), name
    assert B.run_plan.__module__ == "xpnet.bench.run"
    with pytest.raises(AttributeError):
        B.no_such_name  # noqa: B018


def test_python_m_xpnet_bench_help():
    done = _python("-m", "xpnet.bench", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m xpnet.bench bench")
    assert "--in-process" in done.stdout


# --------------------------------------------------------------------------- JSON


def test_run_bench_writes_json_md_png_and_prints_json_last(
    tmp_path, capsys, monkeypatch
):
    # No waiting for a quiet machine (up to 30 s per row on a busy one) and no
    # settling pauses between epochs: this test checks the files, not timings.
    monkeypatch.setattr(timing, "wait_for_quiet", lambda *a, **k: 0.0)
    monkeypatch.setattr(bench_plan, "SETTLE_S", 0.0)
    args = parse(
        "--device",
        "cpu",
        "--models",
        "seed",
        "--rows",
        "300",
        "--batch-sizes",
        "128",
        "--gemm-size",
        "64",
        "--out",
        str(tmp_path),
        "--in-process",
        "--json",
        "--note",
        "unit test",
    )
    assert B.run_bench(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    digest = json.loads(out[-1])
    assert digest["schema"] == B.SCHEMA and digest["complete"] is True
    assert digest["rows"][0]["model"] == "seed"
    assert "seed (784-16-16-16-10) on cpu, 300 rows per epoch" in out
    stem = tmp_path / B.output_stem(["cpu"], B.environment()["date"][:10])
    result = json.loads(stem.with_suffix(".json").read_text())
    check_schema(result)
    md = stem.with_suffix(".md").read_text()
    assert md.startswith("# xpnet throughput benchmark: cpu, ")
    assert "real MNIST (15k images tiled to 300)" in md and "unit test" in md
    if importlib.util.find_spec("matplotlib"):
        assert stem.with_suffix(".png").stat().st_size > 1000
    # --append keeps earlier rows and records the earlier run
    args.batch_sizes, args.append, args.note = "64", True, "second"
    assert B.run_bench(args) == 0
    merged = json.loads(stem.with_suffix(".json").read_text())
    assert [r["batch_size"] for r in merged["rows"]] == [128, 64]
    assert len(merged["earlier_runs"]) == 1
    assert merged["config"]["note"] == "unit test | second"
    # a new run of the same day never replaces the earlier file
    before = stem.with_suffix(".json").read_bytes()
    args.append, args.peers = False, "none"
    assert B.run_bench(args) == 0
    assert stem.with_suffix(".json").read_bytes() == before
    second = stem.with_name(stem.name + "-2.json")
    assert json.loads(second.read_text())["rows"][0]["batch_size"] == 64


def check_schema(result):
    assert result["schema"] == B.SCHEMA and result["complete"] is True
    cfg = result["config"]
    for key in (
        "devices",
        "models",
        "batch_sizes",
        "rows",
        "repeats",
        "warmup_epochs",
        "peers",
        "lr",
        "momentum",
        "dtype",
        "data",
        "synthetic",
        "quick",
        "timing",
        "flops",
        "denormals",
    ):
        assert key in cfg, key
    assert cfg["lr"] == 0.01 and cfg["momentum"] == 0.9 and cfg["dtype"] == "float32"
    assert result["environment"]["versions"]["xpnet"] == xpnet.__version__
    gemm = result["gemm"]["cpu"]["xpnet"]
    assert gemm["n"] == 64 and gemm["gflops"] > 0 and len(gemm["times"]) == 5
    # measured before and after the rows; the faster one is the ceiling
    measured = gemm["measured"]
    assert [m["when"] for m in measured] == ["before the rows", "after the rows"]
    assert gemm["gflops"] == max(m["gflops"] for m in measured)
    row = result["rows"][0]
    for key in (
        "model",
        "sizes",
        "device",
        "batch_size",
        "rows",
        "steps_per_epoch",
        "flops_per_epoch",
        "systems",
        "ratio_xpnet_torch",
        "ratio_xpnet_sklearn",
        "ratio_xpnet_numpy",
        "ratio_xpnet_jax",
        "contended",
    ):
        assert key in row, key
    x = row["systems"]["xpnet"]
    for key in (
        "median_s",
        "times",
        "warmup_s",
        "samples_per_s",
        "gflops",
        "pct_gemm",
        "final_loss",
        "discarded",
        "input_checks_s",
        "fit_loop_s",
    ):
        assert key in x, key
    assert len(x["times"]) == 3 and len(x["warmup_s"]) == 1
    assert row["flops_per_epoch"] == B.epoch_flops(B.MODELS["seed"], 300)["total"]
    expected = {"xpnet"} | {p for p in B.PEERS if not B.peer_skip_reason(p, "cpu")}
    assert set(row["systems"]) == expected


def test_write_outputs_replaces_files_atomically(tmp_path, monkeypatch):
    result = {
        "schema": B.SCHEMA,
        "config": {"devices": ["cpu"], "data": "d", "lr": 0.01, "momentum": 0.9,
                   "dtype": "float32", "repeats": 3},
        "environment": {"date": "2026-11-22T00:00:00+00:00", "versions": {},
                        "cpu_model": "c", "cpu_affinity": 2},
        "gemm": {},
        "rows": [fake_row()],
    }  # fmt: skip
    paths = B.write_outputs(result, tmp_path, "cpu-x", plot=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["cpu-x.json", "cpu-x.md"]
    assert json.loads(before["cpu-x.json"]) == json.loads(json.dumps(result))

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    result["rows"].append(fake_row(64))
    with pytest.raises(OSError, match="disk full"):
        B.write_outputs(result, tmp_path, "cpu-x", plot=False)
    # the old complete files stay, and no temporary file is left behind
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert paths == {"json": str(tmp_path / "cpu-x.json"),
                     "md": str(tmp_path / "cpu-x.md")}  # fmt: skip


def test_plot_is_skipped_with_a_message_without_matplotlib(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    message = B.plot_results({"rows": [fake_row()]}, tmp_path / "x.png")
    assert message == "plot: skipped (matplotlib not installed)"
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------- files of the same day


def test_a_second_run_of_the_same_day_gets_a_numbered_stem(tmp_path):
    stem = "cpu-2026-11-22"
    assert B.free_stem(tmp_path, stem) == stem
    assert B.latest_stem(tmp_path, stem) == stem
    (tmp_path / f"{stem}.json").write_text("{}")
    assert B.free_stem(tmp_path, stem) == f"{stem}-2"
    (tmp_path / f"{stem}-2.png").write_bytes(b"")  # any of its files counts
    assert B.free_stem(tmp_path, stem) == f"{stem}-3"
    assert B.latest_stem(tmp_path, stem) == f"{stem}-2"


# ------------------------------------------------------------- the GEMM ceiling


def test_measure_gemm_records_other_processes_cpu_use(monkeypatch):
    from xpnet.bench import machine

    ticks = iter([(0, 0), (100 * timing.TICKS_PER_S, 0)])  # 100 foreign core-s
    monkeypatch.setattr(machine, "cpu_ticks", lambda: next(ticks))
    g = B.measure_gemm("xpnet", xpnet.resolve("cpu"), 32, repeats=2)
    assert g["foreign_cores"] > 1 and g["contended"] is True


def test_the_ceiling_is_the_faster_measurement_and_rows_are_rescaled():
    row = fake_row()  # xpnet 96.3 GFLOP/s against a ceiling of 100
    result = {"rows": [row], "gemm": {}}
    before = {**GEMM, "gflops": 60.0, "foreign_cores": 1.5, "contended": True}
    after = {**GEMM, "gflops": 120.0, "times": [0.5], "foreign_cores": 0.0}
    result["gemm"]["cpu"] = {"xpnet": B.combine_gemm(before, after)}
    B.rescale_pct_gemm(result, "cpu")
    g = result["gemm"]["cpu"]["xpnet"]
    assert g["gflops"] == 120.0 and g["times"] == [0.5]
    assert [m["when"] for m in g["measured"]] == ["before the rows", "after the rows"]
    assert row["systems"]["xpnet"]["pct_gemm"] == pytest.approx(100 * 96.27648 / 120)
    assert row["systems"]["pytorch"]["pct_gemm"] is None  # no torch ceiling now
    header = "\n".join(B.header_lines(fake_result(result)))
    assert (
        "120.0 GFLOP/s (best of 1, the faster of before the rows 60.0 and after the "
        "rows 120.0 (contended before the rows: 1.50 other cores)) [xpnet]" in header
    )


GEMM = {"what": "numpy matmul", "n": 2048, "times": [1.0]}


def fake_result(result):
    return {
        "schema": B.SCHEMA,
        "config": {"devices": ["cpu"], "data": "d", "lr": 0.01, "momentum": 0.9,
                   "dtype": "float32", "repeats": 3},
        "environment": {"date": "2026-11-22T00:00:00+00:00", "versions": {},
                        "cpu_model": "c", "cpu_affinity": 2},
        "peer_messages": [],
        "complete": True,
        **result,
    }  # fmt: skip


def test_a_pct_gemm_above_100_is_never_printed_without_its_explanation():
    row = fake_row()
    result = fake_result(
        {"rows": [row], "gemm": {"cpu": {"xpnet": {**GEMM, "gflops": 62.5}}}}
    )
    B.rescale_pct_gemm(result, "cpu")  # 96.3 GFLOP/s over a ceiling of 62.5
    assert row["systems"]["xpnet"]["pct_gemm"] == pytest.approx(154.04, abs=0.01)
    assert B.table_cells(row)[4] == "154!"
    for markdown in (False, True):
        report = B.format_report(result, markdown=markdown)
        assert "| 154! |" in report if markdown else " 154! " in report
        note = next(ln for ln in report.splitlines() if "% GEMM above 100" in ln)
        assert "on cpu (up to 193, numpy mlp512 b=128)" in note  # all systems
        assert "measured low" in note and "re-run on a quiet machine" in note
    digest = B.summary(result)
    assert digest["rows"][0]["xpnet_pct_gemm_over_100"] is True
    assert digest["notes"] and "% GEMM above 100" in digest["notes"][0]
    # at or below 100: no mark, no note
    result["gemm"]["cpu"]["xpnet"]["gflops"] = 200.0  # numpy's 120 GFLOP/s fit too
    B.rescale_pct_gemm(result, "cpu")
    assert B.table_cells(row)[4] == "48"
    assert "above 100" not in B.format_report(result)
    assert B.summary(result)["notes"] == []


def test_a_peer_above_the_array_librarys_matmul_is_explained_not_blamed_on_noise():
    """JAX's XLA kernels can beat NumPy's BLAS on one core: with no contention
    recorded, the note says the ceiling is the library's, not a bad measurement."""
    row = fake_row(xpnet_s=2.0, jax_s=0.5, numpy_s=None, torch_s=None, sklearn_s=None)
    result = fake_result(
        {"rows": [row], "gemm": {"cpu": {"xpnet": {**GEMM, "gflops": 120.0}}}}
    )
    B.rescale_pct_gemm(result, "cpu")
    assert (
        row["systems"]["jax"]["pct_gemm"] > 100 >= row["systems"]["xpnet"]["pct_gemm"]
    )
    note = next(
        ln for ln in B.format_report(result).splitlines() if "% GEMM above 100" in ln
    )
    assert "jax mlp512" in note and "not the hardware's" in note
    assert "xpnet's percentages hold" in note and "measured low" not in note


# --------------------------------------------------------------------- the plot


def test_bench_plot_has_plain_ticks_shared_ratio_axes_and_a_short_title():
    pytest.importorskip("matplotlib")
    from xpnet.bench.plot import results_figure

    rows = [fake_row(b) for b in (32, 128, 1024)]
    other = fake_row(64)
    other["model"] = "seed"
    result = fake_result({"rows": [*rows, other], "gemm": {}})
    fig = results_figure(result)
    fig.canvas.draw()
    top, bottom = fig.axes[0], fig.axes[2]
    labels = [
        t.get_text()
        for ax in fig.axes
        for t in (*ax.get_xticklabels(), *ax.get_yticklabels())
        if t.get_text()
    ]
    assert labels and not any("^" in t or "$" in t or "times" in t for t in labels)
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["32", "128", "1,024"]
    assert top.get_ylabel() == "seconds per epoch"
    assert "xpnet time / peer time" in bottom.get_ylabel()
    # the ratio row shares one y-axis; the seconds row does not
    assert bottom.get_shared_y_axes().joined(bottom, fig.axes[3])
    assert not top.get_shared_y_axes().joined(top, fig.axes[1])
    title = fig.get_suptitle()
    assert title == "xpnet vs peers: one epoch of 60,000 rows (cpu, 2026-11-22)"


def test_issue17_quiet_wait_option_and_0_waits_not_at_all(monkeypatch):
    from xpnet.bench import run

    waits = []
    monkeypatch.setattr(
        timing,
        "wait_for_quiet",
        lambda max_wait=60.0, window=0.5: waits.append(max_wait) or 0.0,
    )
    plan = B.plan_from_args(parse("--device", "cpu", "--quiet-wait", "2"))
    assert plan.quiet_wait_s == 2.0 and run.wait_for_quiet(plan) == 0.0
    assert waits == [2.0]
    assert B.plan_from_args(parse("--device", "cpu")).quiet_wait_s == 30.0
    quiet = B.plan_from_args(parse("--device", "cpu", "--quiet-wait", "0"))
    assert run.wait_for_quiet(quiet) == 0.0 and waits == [2.0]
    with pytest.raises(XpnetError, match="--quiet-wait must be >= 0 seconds"):
        B.plan_from_args(parse("--device", "cpu", "--quiet-wait", "-1"))


def test_issue17_graph_peers_get_columns_only_where_they_ran():
    row = fake_row(256)
    assert "torch-graph s" not in B.format_table([row])
    graphed = B.make_row(
        "mlp512",
        B.MODELS["mlp512"],
        "cuda:0",
        256,
        60_000,
        {
            name: {"times": [s], "median_s": s, "losses": [0.5]}
            for name, s in (("xpnet", 0.5), ("pytorch", 1.0), ("pytorch-graph", 0.25))
        },
        {"xpnet": {"gflops": 100.0}, "pytorch": {"gflops": 200.0}},
    )
    assert graphed["ratio_xpnet_torch_graph"] == 2.0
    md = B.format_table([graphed], markdown=True).splitlines()
    assert md[0].endswith(
        "| torch-graph s | xpnet/torch-graph | xpnet-graph s | xpnet/xpnet-graph |"
    )
    assert md[2].endswith("| 0.250 | 2.00 | - | - |")
    assert B.peer_skip_reason("pytorch-graph", "cpu") == (
        "skipped on cpu (CUDA graphs: GPUs only)"
    )
    assert not any("graph" in m for m in B.peer_messages(["pytorch"], ["cpu"]))


def test_batch_sizes_for_works_through_the_xpnet_command(tmp_path, monkeypatch):
    """``xpnet bench --batch-sizes-for`` (an append option) crashed in the
    CLI's check of which options were typed (AttributeError: 'object' object
    has no attribute 'append'); found by tests/test_gpu_check.py."""
    from xpnet import cli

    monkeypatch.setattr(bench_plan, "SETTLE_S", 0.0)
    argv = ["bench", "--device", "cpu", "--models", "seed", "--rows", "200"]
    argv += ["--batch-sizes-for", "seed=64", "--peers", "none", "--gemm-size", "32"]
    argv += ["--out", str(tmp_path), "--no-plot", "--quiet-wait", "0", "--in-process"]
    assert cli.main(argv) == 0
    result = json.loads(next(tmp_path.glob("cpu-*.json")).read_text())
    assert [r["batch_size"] for r in result["rows"]] == [64]
