"""Files, locks, temp files, pictures and bench outputs (the new-user review
of main 16bf017, items 2, 3, 4, 7, 8, 9, 13, 14).

Each test reproduces one item with real files through the library or the
real console script, and fails on the code before its fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet import atomic, runlock
from xpnet.callbacks import ModelCheckpoint
from xpnet.errors import XpnetError
from xpnet.model import mlp

SCRIPT = Path(sys.executable).with_name("xpnet")
SMALL = ("--dataset", "mnist-sample", "--device", "cpu", "--hidden", "16", "--quiet")


def run(*args: str | bytes, cwd: Path, timeout: float = 120):
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stderr_lines(proc) -> list[str]:
    text = proc.stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    return [
        ln
        for ln in text.splitlines()
        if ln.strip() and not ln.startswith("xpnet: device auto:")
    ]


def one_line(proc) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    lines = stderr_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, lines)
    return lines[0]


# -- item 2: xpnet.save refuses an existing file unless overwrite=True ---------
@pytest.mark.parametrize("taken", ["mine.npz", "mine.npz.json"])
def test_review2_save_refuses_an_existing_file_without_overwrite(tmp_path, taken):
    (tmp_path / taken).write_text("precious\n")
    model = mlp([4, 3, 2], seed=0)
    with pytest.raises(XpnetError, match="already exists: pass overwrite=True"):
        xpnet.save(tmp_path / "mine.npz", model, preprocessing="none")
    assert (tmp_path / taken).read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken]


def test_review2_save_refuses_its_own_earlier_file_too_and_overwrite_replaces(
    tmp_path,
):
    model = mlp([4, 3, 2], seed=0)
    path = tmp_path / "m.npz"
    xpnet.save(path, model, preprocessing="none")
    with pytest.raises(XpnetError, match="already exists"):
        xpnet.save(path, model, preprocessing="none")
    other = mlp([4, 3, 2], seed=1)
    assert xpnet.save(path, other, preprocessing="none", overwrite=True) == path
    x = np.ones((1, 4), np.float32)
    assert np.array_equal(xpnet.load(path, "cpu").predict(x), other.predict(x))


def test_review2_save_to_a_dangling_link_names_the_link(tmp_path):
    (tmp_path / "dl.npz").symlink_to("nothere.npz")
    with pytest.raises(XpnetError, match="symbolic link to 'nothere.npz', which"):
        xpnet.save(tmp_path / "dl.npz", mlp([4, 2], seed=0), preprocessing="none")
    assert not (tmp_path / "nothere.npz").exists()


# -- item 3: only xpnet's own temp files are cleaned up -------------------------
def test_review3_train_save_keeps_a_users_file_named_like_a_temp_file(tmp_path):
    users = tmp_path / ".X.npz.backup.tmp"
    users.write_text("mine\n")
    looks_ours = tmp_path / ".X.npz.xpnet-tmp-abcdefgh.tmp"
    looks_ours.symlink_to(users.name)  # a link is never ours, whatever its name
    stale = tmp_path / ".X.npz.xpnet-tmp-zz_12345.tmp"
    stale.write_bytes(b"\0" * 100)
    proc = run("train", *SMALL, "--epochs", "1", "--save", "X.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert users.read_text() == "mine\n"
    assert looks_ours.is_symlink()
    assert not stale.exists()


def test_review3_xpnets_temp_names_carry_the_marker(tmp_path):
    seen = []
    with atomic.atomic_write(tmp_path / "f.bin") as f:
        seen = [p.name for p in tmp_path.iterdir()]
        f.write(b"x")
    (name,) = seen
    assert name.startswith(".f.bin.xpnet-tmp-") and name.endswith(".tmp")
    assert len(name) == len("f.bin") + atomic.TEMP_NAME_EXTRA
    (tmp_path / name).write_bytes(b"")  # as a killed writer leaves it
    assert runlock.remove_stale_temp_files(tmp_path / "f.bin") == [tmp_path / name]


# -- item 13: --save .npz says the name is missing -------------------------------
@pytest.mark.parametrize("name", [".npz", "sub/.npz"])
def test_review13_a_bare_npz_suffix_says_the_file_name_is_missing(tmp_path, name):
    proc = run("train", *SMALL, "--epochs", "1", "--save", name, cwd=tmp_path)
    assert "has no file name before .npz" in one_line(proc)
    with pytest.raises(XpnetError, match="has no file name before .npz"):
        ModelCheckpoint(name)
    with pytest.raises(XpnetError, match="has no file name before .npz"):
        xpnet.save(tmp_path / name, mlp([4, 2], seed=0), preprocessing="none")
