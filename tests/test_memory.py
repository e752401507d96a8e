"""Issue 16, item 21: what untrusted headers may ask for is bounded (by what
the file can physically hold and by ``XPNET_MAX_ARRAY_BYTES``), checkpoints'
unused members are never read, and a model too large for the machine is
refused from an estimate before anything is allocated.

All through the real CLI; peak memory is the child process's own high-water
mark (VmHWM)."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from test_cli import one_line_error, run

# The child's own peak: /proc's VmHWM belongs to the program that exec
# started, whereas ru_maxrss keeps the forking pytest's size across exec.
_PEAK = (
    "import resource, sys\n"
    "from xpnet.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "try:\n"
    "    with open('/proc/self/status') as f:\n"
    "        peak = next(int(ln.split()[1]) for ln in f if ln.startswith('VmHWM'))\n"
    "except (OSError, StopIteration):\n"
    "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print('peak-kib', peak, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_measured(*args: str, cwd) -> tuple[subprocess.CompletedProcess, int]:
    """``xpnet ARGS`` through ``xpnet.cli.main`` and its peak RSS in bytes."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    peak = next(int(ln.split()[1]) for ln in lines if ln.startswith("peak-kib"))
    proc.stderr = "\n".join(ln for ln in lines if not ln.startswith("peak-kib"))
    return proc, peak * 1024


def _small_dataset(path, n_train: int = 200) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 784), dtype=np.uint8),
        y_train=np.arange(n_train) % 10,
        x_test=rng.integers(0, 256, (20, 784), dtype=np.uint8),
        y_test=np.arange(20) % 10,
    )


def _train(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    return run(
        "train", "--device", "cpu", "--hidden", "8", "--epochs", "1", "--quiet",
        *args, cwd=cwd, env=env,
    )  # fmt: skip


def test_issue16_item21_npz_array_over_the_limit_is_refused_with_its_size(tmp_path):
    """Item 21: an .npz array may not exceed XPNET_MAX_ARRAY_BYTES; the error
    says the declared size, the limit and how to raise it."""
    _small_dataset(tmp_path / "d.npz")
    env = {"XPNET_MAX_ARRAY_BYTES": "100000"}
    proc = _train("--dataset", "d.npz", "--save", "m.npz", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    message = one_line_error(proc)
    assert "cannot read key 'x_train'" in message
    assert "declares 156,800 bytes" in message and "more than the 100,000" in message
    assert "XPNET_MAX_ARRAY_BYTES=156800" in message
    assert not (tmp_path / "m.npz").exists()
    # Raised, the same file trains.
    env = {"XPNET_MAX_ARRAY_BYTES": "200_000"}
    proc = _train("--dataset", "d.npz", "--save", "m.npz", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    # A limit that is not a number is one line too.
    env = {"XPNET_MAX_ARRAY_BYTES": "lots"}
    proc = _train("--dataset", "d.npz", "--save", "n.npz", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert "XPNET_MAX_ARRAY_BYTES='lots' is not a positive whole number" in (
        one_line_error(proc)
    )


def _zeros_npz(path, shape: tuple[int, ...]) -> None:
    """A real .npz whose x_train is ``shape`` uint8 zeros, deflated as it is
    streamed (never held in memory), and small real other arrays."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x_train.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            left, chunk = int(np.prod(shape)), bytes(1 << 24)
            while left:
                f.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        for name, value in (
            ("y_train", np.zeros(shape[0], np.uint8)),
            ("x_test", np.zeros((2, 784), np.uint8)),
            ("y_test", np.zeros(2, np.uint8)),
        ):
            with z.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, value)


def test_issue16_item21_small_npz_declaring_a_gigabyte_is_refused_at_once(tmp_path):
    """Item 21: a few MB of deflated zeros declaring (1275510, 784) pixels
    (1 GB) took gigabytes with exit 0; the default limit refuses it, quickly
    and without allocating it."""
    _zeros_npz(tmp_path / "zeros.npz", (1_275_510, 784))
    assert (tmp_path / "zeros.npz").stat().st_size < 8 << 20
    start = time.monotonic()
    proc, peak = run_measured(
        "train", "--dataset", "zeros.npz", "--device", "cpu", "--epochs", "1",
        "--save", "m.npz", cwd=tmp_path,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.stderr
    message = one_line_error(proc)
    assert "declares 999,999,840 bytes (953.7 MiB)" in message
    assert "more than the 536,870,912" in message  # the documented 512 MiB
    assert peak < 500 << 20


def _idx_header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def test_issue16_item21_idx_gz_over_the_limit_or_its_file_is_refused(tmp_path):
    """Item 21: an IDX .gz declaring 1000^3 pixels decompressed gigabytes.
    Its declared size is bounded by what its compressed bytes can hold and by
    XPNET_MAX_ARRAY_BYTES, before any data is read."""
    images = np.zeros((300, 28, 28), np.uint8)
    (tmp_path / "x.gz").write_bytes(
        gzip.compress(_idx_header(0x08, images.shape) + images.tobytes())
    )
    labels = np.zeros(300, np.uint8)
    (tmp_path / "y.gz").write_bytes(
        gzip.compress(_idx_header(0x08, labels.shape) + labels.tobytes())
    )
    files = "x.gz,y.gz,x.gz,y.gz"
    env = {"XPNET_MAX_ARRAY_BYTES": "200000"}
    proc = _train("--dataset", files, "--save", "m.npz", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    message = one_line_error(proc)
    assert "x.gz: header of shape 300x28x28 uint8 declares 235,200 bytes" in message
    assert "XPNET_MAX_ARRAY_BYTES=235200" in message
    # 1000^3 declared: 1 GB, over the default limit (the file is padded so
    # that its compressed size could hold it).
    big = gzip.compress(_idx_header(0x08, (1000, 1000, 1000)) + bytes(1000))
    (tmp_path / "big.gz").write_bytes(big + bytes(1 << 20))
    start = time.monotonic()
    proc = _train("--dataset", "big.gz,y.gz", "--save", "m.npz", cwd=tmp_path)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2
    assert "declares 1,000,000,000 bytes" in one_line_error(proc)
    # Unpadded, 1 GB cannot come out of its few dozen compressed bytes.
    (tmp_path / "big.gz").write_bytes(big)
    proc = _train("--dataset", "big.gz,y.gz", "--save", "m.npz", cwd=tmp_path)
    assert proc.returncode == 2
    assert "compressed bytes can hold at most" in one_line_error(proc)


def test_issue16_item21_checkpoint_members_it_does_not_need_are_never_read(
    tmp_path,
):
    """Item 21: a checkpoint with an unused 200 MB member (a few hundred KB
    deflated) took its size in memory on every evaluate and predict."""
    _small_dataset(tmp_path / "d.npz")
    proc = _train("--dataset", "d.npz", "--save", "m.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    baseline, base_peak = run_measured(
        "evaluate", "m.npz", "--device", "cpu", cwd=tmp_path
    )
    assert baseline.returncode == 0, baseline.stderr
    with zipfile.ZipFile(tmp_path / "m.npz", "a", zipfile.ZIP_DEFLATED) as z:
        with z.open("junk.npy", "w", force_zip64=True) as f:
            size = 12 << 24  # 201 MB
            header = {"descr": "|u1", "fortran_order": False, "shape": (size,)}
            np.lib.format.write_array_header_1_0(f, header)
            for _ in range(size >> 24):
                f.write(bytes(1 << 24))
    assert (tmp_path / "m.npz").stat().st_size < 4 << 20
    proc, peak = run_measured("evaluate", "m.npz", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert peak - base_peak < 64 << 20, (peak, base_peak)


def test_issue16_item21_huge_hidden_layers_are_refused_from_an_estimate(tmp_path):
    """Item 21: ``--hidden 1000000,1000000`` allocated 9.3 GB for 35 s before
    failing; the parameters' memory is estimated and refused at once."""
    start = time.monotonic()
    proc, peak = run_measured(
        "train", "--dataset", "mnist-sample", "--device", "cpu", "--hidden",
        "1000000,1000000", "--epochs", "1", "--save", "m.npz", cwd=tmp_path,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.stderr
    message = one_line_error(proc)
    assert "the model has 1,000,796,000,010 parameters" in message
    assert "TiB (float32)" in message and "available; use smaller layers" in message
    assert peak < 1 << 30
    assert not (tmp_path / "m.npz").exists()


def test_issue16_item21_a_checkpoint_it_could_not_read_back_is_not_trained(tmp_path):
    """Item 21: the limit applies to checkpoints too, so ``train --save`` of
    a model whose weights exceed it is refused before training (it could
    not be read back); raised, the same run trains and evaluates."""
    _small_dataset(tmp_path / "d.npz")
    args = ("--dataset", "d.npz", "--hidden", "400", "--save", "m.npz")
    env = {"XPNET_MAX_ARRAY_BYTES": "1000000"}  # above the dataset's arrays
    proc = _train(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    message = one_line_error(proc)
    assert "the 784x400 weights of this model take 1,254,400 bytes" in message
    assert "XPNET_MAX_ARRAY_BYTES=1254400" in message
    assert not (tmp_path / "m.npz").exists()
    env = {"XPNET_MAX_ARRAY_BYTES": "1254400"}
    proc = _train(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run("evaluate", "m.npz", "--device", "cpu", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr


def test_issue16_item21_npy_and_checkpoint_arrays_over_the_limit_say_so(tmp_path):
    """Item 21: predict's .npy inputs are bounded like every file (header
    first: numpy.load allocates what it declares), and a checkpoint over the
    limit is not called damaged."""
    _small_dataset(tmp_path / "d.npz")
    proc = _train("--dataset", "d.npz", "--save", "m.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "big.npy", "wb") as f:  # a header alone: 2.4 GB declared
        header = {"descr": "|u1", "fortran_order": False, "shape": (3_000_000, 784)}
        np.lib.format.write_array_header_1_0(f, header)
    proc, peak = run_measured(
        "predict", "m.npz", "big.npy", "--device", "cpu", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "'big.npy': its shape (3000000, 784) uint8 declares 2,352,000,000" in (
        one_line_error(proc)
    )
    assert peak < 400 << 20
    env = {"XPNET_MAX_ARRAY_BYTES": "1000"}  # below the metadata's size
    proc = run("evaluate", "m.npz", "--device", "cpu", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    message = one_line_error(proc)
    assert "checkpoint 'm.npz': cannot read its metadata" in message
    assert "more than the 1,000 xpnet reads" in message and "damaged" not in message


def test_issue16_item21_a_big_canvas_image_is_read_in_bounded_memory(tmp_path):
    """Item 21 (images): a 100 KB PNG of an 8000x8000 page took 3.2 GB and
    half a minute as float arrays; it is box-reduced while still compact."""
    pil = pytest.importorskip("PIL.Image", reason="Pillow not installed")
    _small_dataset(tmp_path / "d.npz")
    proc = _train("--dataset", "d.npz", "--save", "m.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = np.full((8000, 8000), 255, np.uint8)
    page[2500:5500, 3800:4300] = 0  # a thick dark bar: a 1
    pil.fromarray(page).save(tmp_path / "page.png")
    assert (tmp_path / "page.png").stat().st_size < 1 << 20
    proc, peak = run_measured(
        "predict", "m.npz", "page.png", "--device", "cpu", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert peak < 400 << 20, peak


@pytest.mark.parametrize("backend", ["array_api_strict"])
def test_issue16_item21_library_models_are_estimated_too(backend):
    """The estimate is the model's, not only the CLI's."""
    import xpnet
    from xpnet.errors import XpnetError

    with pytest.raises(XpnetError, match=r"1,000,796,000,010 parameters"):
        xpnet.mlp([784, 10**6, 10**6, 10], device="cpu", backend=backend)


def test_issue16_item21_a_batch_too_large_for_memory_is_refused_from_an_estimate():
    """The CLI also estimates a batch's activations (``--batch-size``) before
    building the model: a billion rows of 784-1000-10 need ~21 TB."""
    from xpnet.backend import resolve
    from xpnet.errors import XpnetError
    from xpnet.memory import check_batch_fits

    cpu = resolve("cpu", "numpy")
    check_batch_fits([784, 1000, 10], 64, "float32", 1, cpu)  # fits anywhere
    with pytest.raises(XpnetError, match=r"a batch of 1,000,000,000 rows through "
                       r"layers 784-1000-10 needs at least 19\.\d TiB"):  # fmt: skip
        check_batch_fits([784, 1000, 10], 10**9, "float32", 1, cpu)
