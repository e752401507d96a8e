"""Data-parallel training without MPI: the split arithmetic, the one-rank
communicator, host staging, the stop flag, and N ranks simulated by threads
that share an in-process communicator (the same code path as MPI's)."""

from __future__ import annotations

import signal
import sys
import threading

import numpy as np
import pytest

import xpnet
from xpnet.cli.main import main
from xpnet.distributed import (
    Communicator,
    DistributedError,
    HostStaged,
    ShardPlan,
    SingleProcess,
    is_collective,
    rank_samples,
    shard,
)
from xpnet.errors import DivergenceError
from xpnet.interrupts import STOP_INT, STOP_TERM, Terminated, raise_agreed_stop


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize(("n", "batch"), [(70, 16), (5, 16), (2, 1), (12, 4)])
def test_shares_cover_every_batch_once(n, batch, size):
    plans = [ShardPlan(n, batch, rank, size) for rank in range(size)]
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        spans = [shard(lo, hi, rank, size) for rank in range(size)]
        assert spans[0][0] == lo and spans[-1][1] == hi
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        widths = [b - a for a, b in spans]
        assert max(widths) - min(widths) <= 1
    counts = rank_samples(n, batch, size)
    assert sum(counts) == n
    for plan, count in zip(plans, counts, strict=True):
        assert plan.n_local == count
        assert sum(b.hi - b.lo for b in plan.batches) == count
        assert [b.total for b in plan.batches] == [
            min(batch, n - lo) for lo in range(0, n, batch)
        ]
        if size > 1:
            assert len(plan.rows) == count
    if size > 1:
        every = np.sort(np.concatenate([p.rows for p in plans]))
        np.testing.assert_array_equal(every, np.arange(n))


class ThreadRanks:
    """``size`` in-process ranks (one thread each) and their collectives:
    each contributes, waits for all, then reads the same combined value."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=30)
        self.slots: list = [None] * size

    def exchange(self, rank: int, value):
        self.slots[rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values


class ThreadComm(HostStaged):
    def __init__(self, ranks: ThreadRanks, rank: int) -> None:
        super().__init__()
        self.ranks, self.rank, self.size = ranks, rank, ranks.size

    def _allreduce_host(self, buf):
        parts = self.ranks.exchange(self.rank, buf.copy())
        buf[...] = sum(parts[1:], parts[0])

    def allgather(self, value):
        return self.ranks.exchange(self.rank, value)

    def bcast_array(self, host, root=0):
        host[...] = self.ranks.exchange(self.rank, host.copy())[root]
        return host


def on_ranks(size: int, work) -> list:
    """``work(comm)`` on ``size`` threaded ranks; their results (or errors)."""
    ranks = ThreadRanks(size)
    results: list = [None] * size

    def run(rank: int) -> None:
        try:
            results[rank] = work(ThreadComm(ranks, rank))
        except BaseException as exc:  # noqa: BLE001 (reported to the test)
            results[rank] = exc
            if not is_collective(exc):  # the others would wait for it
                ranks.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def problem(n: int = 70):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, 8))
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


def net(optimizer="sgd", hidden=16, **kwargs):
    return xpnet.mlp(
        [8, hidden, 3],
        optimizer=xpnet.get_optimizer(optimizer, **kwargs),
        dtype="float64",
        seed=3,
        device="cpu",
    )


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize(
    "optimizer",
    [
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        {"optimizer": "adam", "lr": 0.01},
    ],
)
def test_threaded_ranks_follow_one_process(size, optimizer):
    """The exactness of tests/test_mpi.py without MPI: 20 steps, float64."""
    X, y = problem()

    def train(comm):
        model = net(**optimizer)
        history = model.fit(X, y, 4, 16, validation_data=(X, y), communicator=comm)
        return model, history, comm.reduce_calls

    one = net(**optimizer)
    expected = one.fit(X, y, 4, 16, validation_data=(X, y))
    counts = rank_samples(70, 16, size)
    for rank, (model, history, calls) in enumerate(on_ranks(size, train)):
        assert calls == 20
        np.testing.assert_allclose(
            model.parameters.flat, one.parameters.flat, rtol=0, atol=1e-12
        )
        last, ref = history.records[-1], expected.records[-1]
        assert last["loss"] == pytest.approx(ref["loss"], rel=1e-12)
        assert last["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-12)
        assert last["accuracy"] == ref["accuracy"]
        assert last["val_accuracy"] == ref["val_accuracy"]
        assert last["samples"] == counts[rank]


def test_more_ranks_than_rows_join_with_zero_gradients():
    """A batch of 2 rows on 3 ranks: one rank has none, still the same step."""
    X, y = problem(6)

    def train(comm):
        model = net(lr=0.1)
        model.fit(X, y, 2, 2, communicator=comm)
        return model

    one = net(lr=0.1)
    one.fit(X, y, 2, 2)
    for model in on_ranks(3, train):
        np.testing.assert_allclose(
            model.parameters.flat, one.parameters.flat, rtol=0, atol=1e-12
        )


def test_ranks_with_different_architectures_are_refused_on_every_rank():
    X, y = problem()

    def train(comm):
        net(hidden=16 if comm.rank == 0 else 32, lr=0.1).fit(
            X, y, 1, 16, communicator=comm
        )

    errors = on_ranks(2, train)
    assert all(isinstance(e, DistributedError) for e in errors)
    assert str(errors[0]) == str(errors[1])
    assert "the ranks disagree on the architecture: Dense 8x16" in str(errors[0])
    assert "Dense 8x32" in str(errors[0]) and "\n" not in str(errors[0])


def test_ranks_with_different_data_are_refused():
    X, y = problem()

    def train(comm):
        Xr = X + comm.rank  # a different dataset on rank 1
        net(lr=0.1).fit(Xr, y, 1, 16, communicator=comm)

    errors = on_ranks(2, train)
    assert all(isinstance(e, DistributedError) for e in errors)
    assert "disagree on the training inputs" in str(errors[0])


def test_initial_parameters_come_from_rank_0():
    """Unseeded models start from different weights: rank 0's are used."""
    X, y = problem()

    def train(comm):
        model = xpnet.mlp([8, 4, 3], dtype="float64", seed=None, device="cpu")
        start = xpnet.to_numpy(model.parameters.flat, copy=True)
        model.fit(X, y, 0, 16, communicator=comm)
        return start, xpnet.to_numpy(model.parameters.flat)

    (start0, after0), (start1, after1) = on_ranks(2, train)
    assert not np.array_equal(start0, start1)
    np.testing.assert_array_equal(after0, start0)
    np.testing.assert_array_equal(after1, start0)


def test_single_process_communicator_changes_nothing():
    X, y = problem()
    a, b = net(lr=0.1), net(lr=0.1)
    ha = a.fit(X, y, 2, 16)
    hb = b.fit(X, y, 2, 16, communicator=SingleProcess())
    np.testing.assert_array_equal(a.parameters.flat, b.parameters.flat)
    assert ha.records[-1]["loss"] == hb.records[-1]["loss"]


class Doubling(HostStaged):
    """Two identical ranks: the all-reduce doubles."""

    def _allreduce_host(self, buf):
        buf *= 2


def test_host_staging_sums_in_place_on_numpy_and_copies_elsewhere():
    strict = pytest.importorskip("array_api_strict")
    comm = Doubling()
    grads = np.arange(3.0)
    backend = xpnet.resolve("cpu")
    out, stop = comm.reduce_step(grads, STOP_INT, backend)
    assert out is grads and stop == 2 * STOP_INT
    np.testing.assert_array_equal(grads, [0.0, 2.0, 4.0])
    assert (comm.reduce_calls, comm.reduce_bytes) == (1, 4 * 8)
    other = xpnet.resolve("cpu", "array-api-strict")
    device_grads = strict.asarray([1.0, 2.0])
    out, stop = comm.reduce_step(device_grads, 0.0, other)
    assert stop == 0.0 and other.owns(out)
    np.testing.assert_array_equal(xpnet.to_numpy(out), [2.0, 4.0])


def test_agreed_stop_raises_the_same_on_every_rank():
    raise_agreed_stop(0.0)  # nobody asked
    with pytest.raises(KeyboardInterrupt) as interrupted:
        raise_agreed_stop(STOP_INT)
    with pytest.raises(Terminated) as terminated:
        raise_agreed_stop(STOP_TERM + STOP_INT)  # SIGTERM wins over Ctrl-C
    assert is_collective(interrupted.value) and is_collective(terminated.value)
    assert is_collective(DivergenceError("x"))
    assert not is_collective(RuntimeError("one rank only"))


def test_a_signal_on_one_rank_stops_all_at_the_same_step(monkeypatch):
    """The stop request rides on the step's all-reduce (no extra call)."""
    from xpnet import interrupts

    X, y = problem()
    steps = []

    def train(comm):
        model = net(lr=0.1)

        def on_batch(done):
            steps.append((comm.rank, done))
            if comm.rank == 1 and done == 32:
                interrupts._handler(signal.SIGTERM, None)  # a SIGTERM arrives

        try:
            model.fit(X, y, 3, 16, on_batch=on_batch, communicator=comm)
        except Terminated as exc:
            return model.optimizer.iterations, comm.reduce_calls, exc
        return None

    monkeypatch.setattr(interrupts, "install", lambda: lambda: None)
    results = on_ranks(2, train)
    for iterations, calls, exc in results:
        # The request made after step 2 stops both ranks inside step 3,
        # before its update.
        assert (iterations, calls) == (2, 3)
        assert exc.agreed
    assert interrupts._State.pending is None


def test_cli_distributed_without_mpi4py_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    code = main(
        ["train", "--dataset", "mnist-sample", "--distributed", "--epochs", "1"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "distributed training needs mpi4py" in err
    assert "pip install 'xpnet[mpich]'" in err


def test_communicator_base_is_one_rank():
    comm = Communicator()
    assert (comm.rank, comm.size) == (0, 1)
    assert comm.allgather({"a": 1}) == [{"a": 1}]


def test_overlap_refuses_a_backend_it_cannot_reduce_in_place():
    """The overlapped all-reduce sums slices of the gradient buffer in place:
    only a writeable NumPy buffer allows that; others get one line."""
    from xpnet.distributed.data_parallel import OverlappedAllReduce, gradient_reducer

    pytest.importorskip("array_api_strict")
    comm = SingleProcess()
    comm.overlap = True
    net = xpnet.mlp([4, 3, 2], device=xpnet.resolve("cpu", "array-api-strict"))
    with pytest.raises(xpnet.XpnetError, match="NumPy backend only") as info:
        gradient_reducer(comm, net)
    assert "\n" not in str(info.value)
    numpy_net = xpnet.mlp([4, 3, 2])
    assert isinstance(gradient_reducer(comm, numpy_net), OverlappedAllReduce)


def test_shard_plan_is_worked_out_once():
    """fit reads the plan every epoch: its batches and rows are made once."""
    plan = ShardPlan(70, 16, 1, 3)
    assert plan.batches is plan.batches
    assert plan.rows is plan.rows
    assert plan.n_local == rank_samples(70, 16, 3)[1]
