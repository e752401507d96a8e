"""The classic recipe (issue 12, section 6): a sigmoid output trained with MSE
from the command line, its checkpoints, and examples/classic_recipe.py."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xpnet.checkpoint import load_checkpoint, read_checkpoint
from xpnet.cli import main
from xpnet.cli.parser import build_parser
from xpnet.schedules import InverseTimeDecay

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "classic_recipe.py"
DATA = Path(__file__).parent / "data"


def _example():
    spec = importlib.util.spec_from_file_location("classic_recipe", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train(tmp_path, *options, capsys) -> dict:
    code = main(
        [
            "train",
            "--dataset",
            "mnist-sample",
            "--device",
            "cpu",
            "--quiet",
            "--json",
            *options,
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0, out
    return json.loads(out)


def test_the_classic_net_from_the_cli_is_the_example_seed_for_seed(
    tmp_path, capsys, monkeypatch
):
    """``xpnet train`` with the classic options builds the example's net and
    gets its numbers; the checkpoint records the head, and evaluate and
    predict use it."""
    monkeypatch.chdir(tmp_path)
    example = _example()
    report = _train(
        tmp_path,
        *example.CLASSIC_CLI,
        "--epochs",
        "1",
        "--save",
        "c.npz",
        capsys=capsys,
    )
    from xpnet.datasets import load_dataset
    from xpnet.preprocessing import preprocess

    data = preprocess(load_dataset("mnist-sample"))
    assert report["history"][0]["test_accuracy"] == pytest.approx(
        example.test_accuracies(data, "classic", 1, 0)[0], abs=0
    )

    meta, _ = read_checkpoint(tmp_path / "c.npz")
    assert meta["train_options"]["output_activation"] == "sigmoid"
    assert meta["train_options"]["init"] == "he-normal"
    layers = meta["architecture"]["layers"]
    assert layers[-1] == {"type": "Sigmoid"}
    assert {x.get("init") for x in layers if x["type"] == "Dense"} == {"he_normal"}
    model, _ = load_checkpoint(tmp_path / "c.npz", "cpu")
    schedule = model.optimizer.schedule
    assert isinstance(schedule, InverseTimeDecay)
    assert (schedule.lr, schedule.decay, model.optimizer.iterations) == (0.1, 0.001, 79)
    assert model.optimizer.lr == pytest.approx(0.1 / (1 + 0.001 * 79))

    resume = ["train", "--resume", "c.npz", "--epochs", "2", "--device", "cpu"]
    assert main([*resume, "--output-activation", "identity"]) == 2
    assert "contradicts checkpoint" in capsys.readouterr().err

    assert main(["evaluate", "c.npz", "--device", "cpu", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["accuracy"] == report["history"][0]["test_accuracy"]
    assert (
        main(["predict", "c.npz", "mnist-sample:0", "--device", "cpu", "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)["results"][0]
    p = np.array(result["probabilities"])
    # The sigmoid outputs as they are: in [0, 1], not normalised.
    assert p.min() >= 0 and p.max() <= 1 and not np.isclose(p.sum(), 1.0)
    assert result["prediction"] == int(np.argmax(p))


@pytest.mark.parametrize(
    "head,loss",
    [
        ("softmax", "cross-entropy"),
        ("sigmoid", "cross-entropy"),
        ("sigmoid", "bce"),
        ("softmax", "bce"),
    ],
)
def test_a_head_before_a_fused_loss_is_one_line(head, loss, capsys):
    code = main(
        ["train", "--dataset", "mnist-sample", "--device", "cpu"]
        + ["--output-activation", head, "--loss", loss]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert (
        f"--output-activation {head} with --loss {loss} maps the outputs twice" in err
    )
    assert "drop --output-activation, or use --loss mse" in err


def test_resume_keeps_the_head_and_old_checkpoints_read_as_identity(tmp_path, capsys):
    ckpt = tmp_path / "old.npz"
    shutil.copy(DATA / "ckpt-0.1.0-adam.npz", ckpt)
    data = str(DATA / "tiny-dataset.npz")
    resume = ["train", "--resume", str(ckpt), "--dataset", data, "--device", "cpu"]
    # 0.1.0 could only train logits: a sigmoid head contradicts it...
    assert main([*resume, "--epochs", "3", "--output-activation", "sigmoid"]) == 2
    err = capsys.readouterr().err
    assert "--output-activation sigmoid contradicts checkpoint" in err
    assert "(--output-activation identity)" in err
    # ...and resuming records what it was trained with.
    assert main([*resume, "--epochs", "3", "--quiet"]) == 0
    options = read_checkpoint(ckpt)[0]["train_options"]
    assert (options["output_activation"], options["init"]) == ("identity", "auto")


def test_train_help_offers_the_classic_options():
    text = build_parser().commands["train"].format_help()
    for phrase in ("--output-activation {identity,sigmoid,softmax}", "--init"):
        assert phrase in text


def test_the_example_runs(tmp_path):
    """The README's classic-recipe example, 1 epoch on the bundled sample."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "1", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "sigmoid + MSE   softmax + cross-entropy" in proc.stdout
    row = next(ln for ln in lines if ln.strip().startswith("1 "))
    classic, softmax = (float(v.rstrip("%")) for v in row.split()[1:])
    assert 10 < classic < 100 and 10 < softmax < 100
    assert "mnist: not available here, skipped" in proc.stdout


def test_the_example_compares_on_full_mnist_when_it_is_cached(monkeypatch, capsys):
    """Full MNIST is not available offline: its branch runs on the sample's
    data, handed out under the name mnist."""
    example = _example()
    sample = example.load_dataset("mnist-sample")
    seen = []

    def cached_only(name, data_dir, download):
        seen.append((name, data_dir, download))
        return sample

    monkeypatch.setattr(example, "load_dataset", cached_only)
    assert example.compare("mnist", "/cache", 1, 0)
    assert seen == [("mnist", "/cache", False)]
    out = capsys.readouterr().out
    assert "mnist: 5,000 train / 10,000 test images, seed 0" in out
    assert re.search(r"^ +1 +\d+\.\d\d% +\d+\.\d\d%$", out, re.M), out
