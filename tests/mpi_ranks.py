"""Programs that tests/test_mpi.py runs on every rank: ``mpiexec -n N python
tests/mpi_ranks.py SCENARIO OUT [options]``.

- ``train OUT``: for each of CONFIGS, 4 epochs of 5 batches (20 steps) of a
  small float64 problem, global batch 16 (uneven shares, a partial last
  batch); rank 0 saves the parameters and histories to OUT (``.npz``).
- ``mismatch OUT``: rank 1 builds a wider model; every rank must refuse.
- ``callbacks OUT``: 12 epochs with early stopping, a plateau schedule and
  a CSV log (the same path on every rank), and the last rank alone asking
  to stop after epoch 6; rank 0 saves each rank's epochs and rates.
- ``overlap OUT``: ``train``'s runs with ``MPICommunicator(overlap=True)``
  (one non-blocking all-reduce per parameter during backward) and without;
  rank 0 saves both parameters and the overlapped all-reduce counts.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import xpnet
from xpnet.distributed import MPICommunicator

#: the problem every scenario trains on: 70 samples, 8 features, 3 classes
N, FEATURES, CLASSES, BATCH, EPOCHS = 70, 8, 3, 16, 4
#: (optimizer, weight decay) of the exactness runs
CONFIGS = [("sgd", 0.0), ("sgd", 0.01), ("adam", 0.0), ("adam", 0.01)]


def data(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, FEATURES))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


def model(optimizer: str, weight_decay: float, hidden: int = 16) -> xpnet.Sequential:
    opt = xpnet.get_optimizer(
        optimizer,
        lr=0.05 if optimizer == "sgd" else 0.01,
        weight_decay=weight_decay,
        **({"momentum": 0.9} if optimizer == "sgd" else {}),
    )
    return xpnet.mlp(
        [FEATURES, hidden, CLASSES], optimizer=opt, dtype="float64", seed=3
    )


def train_with_callbacks(comm, out: str) -> tuple[xpnet.Sequential, xpnet.History]:
    """``callbacks``'s run (``comm`` None: one process without MPI)."""
    from xpnet.callbacks import (
        CSVLogger,
        EarlyStopping,
        LambdaCallback,
        ReduceLROnPlateau,
    )

    X, y = data()
    net = model("sgd", 0.0)
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)

    def last_rank_stops(epoch: int, logs: dict) -> None:
        if rank == size - 1 and epoch == 6:
            net.stop_training = True

    callbacks = [
        EarlyStopping(patience=3, restore_best_weights=True),
        ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.0),
        CSVLogger(out + ".csv"),
        LambdaCallback(on_epoch_end=last_rank_stops),
    ]
    history = net.fit(
        X,
        y,
        12,
        BATCH,
        validation_data=(X[:25], y[:25]),
        callbacks=callbacks,
        communicator=comm,
    )
    return net, history


def main(argv: list[str]) -> int:
    scenario, out = argv[0], argv[1]
    comm = MPICommunicator()
    X, y = data()
    if scenario == "train":
        results = {}
        for optimizer, decay in CONFIGS:
            net = model(optimizer, decay)
            history = net.fit(
                X, y, EPOCHS, BATCH, validation_data=(X[:25], y[:25]), communicator=comm
            )
            key = f"{optimizer}-{decay}"
            results[key] = xpnet.to_numpy(net.parameters.flat)
            results[key + "-history"] = np.array(json.dumps(history.records))
        if comm.rank == 0:
            np.savez(out, calls=comm.reduce_calls, **results)
        return 0
    if scenario == "callbacks":
        net, history = train_with_callbacks(comm, out)
        ranks = comm.allgather([len(history), history["lr"]])
        if comm.rank == 0:
            np.savez(
                out,
                params=xpnet.to_numpy(net.parameters.flat),
                history=np.array(json.dumps(history.records)),
                ranks=np.array(json.dumps(ranks)),
                stop_reason=np.array(history.stop_reason),
            )
        return 0
    if scenario == "overlap":
        overlapped = MPICommunicator(abort_on_error=False, overlap=True)
        results = {}
        for optimizer, decay in CONFIGS:
            for name, c in (("plain", comm), ("overlap", overlapped)):
                net = model(optimizer, decay)
                net.fit(X, y, EPOCHS, BATCH, communicator=c)
                results[f"{name}-{optimizer}-{decay}"] = xpnet.to_numpy(
                    net.parameters.flat
                )
        if comm.rank == 0:
            np.savez(
                out,
                calls=overlapped.reduce_calls,
                nbytes=overlapped.reduce_bytes,
                size=comm.size,
                **results,
            )
        return 0
    if scenario == "mismatch":
        net = model("sgd", 0.0, hidden=16 if comm.rank == 0 else 32)
        try:
            net.fit(X, y, 1, BATCH, communicator=comm)
        except xpnet.XpnetError as exc:
            # One write: print() writes the newline apart, and mpiexec could
            # put the other rank's line between the two.
            sys.stdout.write(f"rank {comm.rank}: {exc}\n")
            sys.stdout.flush()
            return 2
        return 0
    raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
