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


def test_library_save_through_a_dangling_link_creates_its_target(tmp_path):
    (tmp_path / "dl.npz").symlink_to("tgt.npz")
    xpnet.save(tmp_path / "dl.npz", mlp([4, 2], seed=0), preprocessing="none")
    assert (tmp_path / "dl.npz").is_symlink()
    assert (tmp_path / "tgt.npz").is_file() and (tmp_path / "tgt.npz.json").is_file()


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


# -- item 7: a dangling link as --save writes its target, like any link --------
def test_review7_save_through_a_dangling_link_creates_its_target(tmp_path):
    (tmp_path / "dl.npz").symlink_to("tgt.npz")
    (tmp_path / "dl.png").symlink_to("tgt.png")
    args = ("train", *SMALL, "--save", "dl.npz", "--plot", "dl.png")
    proc = run(*args, "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "is a symbolic link: the checkpoint is written to its target" in (
        proc.stderr.decode()
    )
    assert (tmp_path / "dl.npz").is_symlink() and (tmp_path / "tgt.npz").is_file()
    assert (tmp_path / "tgt.npz.json").is_file() and (tmp_path / "tgt.png").is_file()
    proc = run("train", "--resume", "dl.npz", "--epochs", "2", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert xpnet.load(tmp_path / "tgt.npz", "cpu") is not None


def test_review7_resume_of_a_dangling_link_names_the_link(tmp_path):
    (tmp_path / "dl.npz").symlink_to("tgt.npz")
    line = one_line(run("train", "--resume", "dl.npz", cwd=tmp_path))
    assert "'dl.npz' is a symbolic link to 'tgt.npz', which does not exist" in line
    (tmp_path / "d2.npz").symlink_to("nofolder/x.npz")
    line = one_line(run("train", *SMALL, "--save", "d2.npz", cwd=tmp_path))
    assert "whose folder does not exist" in line


# -- item 4: xpnet's own SVG and PDF pictures are recognised, like PNG --------
@pytest.mark.parametrize("suffix", ["svg", "pdf"])
def test_review4_own_svg_and_pdf_pictures_are_redrawn_without_overwrite(
    tmp_path, suffix
):
    curves, matrix = f"pe.{suffix}", f"cm.{suffix}"
    for epochs in ("1", "2"):
        args = ("--save", "pe.npz", "--resume-if-exists", "--plot", curves)
        proc = run("train", *SMALL, "--epochs", epochs, *args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    for _ in range(2):
        proc = run("plot", "pe.npz", "-o", curves, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        evaluate = ("evaluate", "pe.npz", "--dataset", "mnist-sample")
        proc = run(*evaluate, "--device", "cpu", "--plot", matrix, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    # Another kind of picture, or a picture of another checkpoint, is not ours.
    line = one_line(run(*evaluate, "--plot", curves, cwd=tmp_path))
    assert "already exists: replace it with --overwrite" in line
    (tmp_path / "other.npz").write_bytes((tmp_path / "pe.npz").read_bytes())
    line = one_line(run("plot", "other.npz", "-o", curves, cwd=tmp_path))
    assert "already exists: replace it with --overwrite" in line


@pytest.mark.parametrize("suffix", ["svg", "pdf"])
def test_a_users_svg_or_pdf_is_still_refused(tmp_path, trained, suffix):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.savefig(tmp_path / f"mine.{suffix}", format=suffix)
    before = (tmp_path / f"mine.{suffix}").read_bytes()
    line = one_line(run("plot", str(trained), "-o", f"mine.{suffix}", cwd=tmp_path))
    assert "already exists" in line
    assert (tmp_path / f"mine.{suffix}").read_bytes() == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("trained")
    proc = run("train", *SMALL, "--epochs", "1", "--save", "one.npz", cwd=where)
    assert proc.returncode == 0, proc.stderr
    return where / "one.npz"


# -- item 8: a checkpoint name that is not UTF-8 is drawn escaped ---------------
def test_review8_plot_of_a_checkpoint_with_an_undecodable_name_works(tmp_path):
    name = b"caf\xe9.npz"
    proc = run("train", *SMALL, "--epochs", "1", "--save", name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for _ in range(2):  # and the second time the picture is recognised as ours
        proc = run("plot", name, "-o", "ok.png", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert b"caf\\udce9.npz" in (tmp_path / "ok.png").read_bytes()
    other = b"b\xe9.npz"
    proc = run("train", *SMALL, "--epochs", "1", "--save", other, "--plot", "t.pdf",
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = run("evaluate", name, "--dataset", "mnist-sample", "--plot", "cm.svg",
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


# -- item 9: bench --out is checked before any timing ---------------------------
@pytest.mark.parametrize("out", ["f.npz", "/dev/full", "f.npz/sub"])
def test_review9_bench_out_that_is_not_a_folder_is_refused_before_any_work(
    tmp_path, out
):
    (tmp_path / "f.npz").write_text("precious\n")
    proc = run("bench", "--quick", "--no-plot", "--out", out, cwd=tmp_path, timeout=60)
    line = one_line(proc)  # nothing else: no timing started
    assert line.startswith(f"xpnet: error: --out {out!r}") and "not a folder" in line
    assert (tmp_path / "f.npz").read_text() == "precious\n"


# -- item 14: a log on a device or FIFO says it is not a regular file -----------
@pytest.mark.parametrize("logger", ["CSVLogger", "JSONLinesLogger"])
@pytest.mark.parametrize(
    ("where", "append"), [("device", False), ("fifo", False), ("fifo", True)]
)
def test_review14_a_logger_on_a_device_or_fifo_says_it_is_not_a_regular_file(
    tmp_path, logger, append, where
):
    from xpnet import callbacks

    if where == "fifo":
        path, kind = tmp_path / "fifo", "a FIFO"
        os.mkfifo(path)
    else:
        path, kind = Path("/dev/full"), "a character device"
    log = getattr(callbacks, logger)(path, append=append)
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
    # A reader, so that code which opens the FIFO does not block forever.
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(XpnetError, match=f"is {kind}.*give a regular file's"):
            mlp([4, 3, 2], seed=0).fit(x, y, epochs=1, callbacks=[log], verbose=0)
    finally:
        log.close()  # before the reader goes: a write then would be a SIGPIPE
        os.close(reader)


# Before the fix, appending to /dev/full looped and grew without bound (24 GB
# until the kernel killed it): run in a child with a memory and time limit.
_APPEND_TO_DEVICE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import numpy as np
from xpnet import callbacks
from xpnet.errors import XpnetError
from xpnet.model import mlp
log = getattr(callbacks, sys.argv[1])("/dev/full", append=True)
x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
try:
    mlp([4, 3, 2], seed=0).fit(x, y, epochs=1, callbacks=[log], verbose=0)
except XpnetError as exc:
    print(exc)
"""


@pytest.mark.parametrize("logger", ["CSVLogger", "JSONLinesLogger"])
def test_review14_appending_a_log_to_a_device_is_refused(tmp_path, logger):
    proc = subprocess.run(
        [sys.executable, "-c", _APPEND_TO_DEVICE, logger],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'/dev/full' is a character device" in proc.stdout


# -- item 13: --save .npz says the name is missing -------------------------------
@pytest.mark.parametrize("name", [".npz", "sub/.npz"])
def test_review13_a_bare_npz_suffix_says_the_file_name_is_missing(tmp_path, name):
    proc = run("train", *SMALL, "--epochs", "1", "--save", name, cwd=tmp_path)
    assert "has no file name before .npz" in one_line(proc)
    with pytest.raises(XpnetError, match="has no file name before .npz"):
        ModelCheckpoint(name)
    with pytest.raises(XpnetError, match="has no file name before .npz"):
        xpnet.save(tmp_path / name, mlp([4, 2], seed=0), preprocessing="none")
