"""Issue 16 item 28: the release is 0.2.0, and checkpoints say which xpnet
wrote them (older ones still load: tests/test_checkpoint_compat.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import xpnet
from xpnet.checkpoint import read_checkpoint
from xpnet.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def test_item28_version_is_0_2_0_and_the_changelog_heads_with_it():
    assert xpnet.__version__ == "0.2.0"
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == "0.2.0 (unreleased)"
    assert headings.count("0.2.0 (unreleased)") == 1  # one section, all add to it


def test_item28_checkpoints_say_0_2_0_also_when_resumed_from_0_1_0(tmp_path):
    new = tmp_path / "new.npz"
    args = ["--dataset", "mnist-sample", "--hidden", "4", "--quiet"]
    assert main(["train", *args, "--epochs", "1", "--save", str(new)]) == 0
    assert read_checkpoint(new)[0]["xpnet_version"] == "0.2.0"
    old = tmp_path / "old.npz"
    shutil.copy(DATA / "ckpt-0.1.0-adam.npz", old)
    assert read_checkpoint(old)[0]["xpnet_version"] == "0.1.0"
    data = str(DATA / "tiny-dataset.npz")
    resume = ["train", "--resume", str(old), "--dataset", data, "--epochs", "3"]
    assert main([*resume, "--quiet"]) == 0
    assert read_checkpoint(old)[0]["xpnet_version"] == "0.2.0"
