"""``xpnet train --distributed``: one rank of ``mpiexec -n N xpnet train ...``.

Rank 0 is the run as one process would be (output, progress bar, checkpoint,
``--json``); the other ranks train silently (stdout discarded; their own
errors still reach stderr). Failures: an error raised on every rank alike
(:func:`xpnet.distributed.is_collective`: mismatched options, divergence, an
agreed Ctrl-C/SIGTERM) ends each rank normally with its usual exit status;
anything else on one rank aborts all of them (``MPI_Abort``) after its
message is printed, so no rank waits forever in a collective.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import XpnetError
from ..interrupts import Terminated
from .common import Exit

#: the options that must be equal on every rank (the device may differ: one
#: GPU per rank)
SAME_ON_EVERY_RANK = ("epochs", "resume", "resume_if_exists", "save", "overwrite")


@contextlib.contextmanager
def agreed_start(rank: Rank | None) -> Iterator[None]:
    """Run start-up checks that each rank makes alone (its files, its
    dataset), then, with ranks, agree on them: if any rank raised an
    :class:`XpnetError`, every rank raises the first one (rank 0 says it,
    exit 2, no ``MPI_Abort``); else all go on. Without ranks, errors pass
    through unchanged."""
    if rank is None:
        yield
        return
    error: XpnetError | None = None
    try:
        yield
    except XpnetError as exc:
        error = exc
    rank.agree_on_start(error)


#: environment variables in which MPI launchers give a process its rank
WORLD_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def launched_as_rank_other_than_0() -> bool:
    """Whether a launcher started this process as rank 1, 2, ... (known
    before MPI is loaded, from the environment)."""
    ranks = (os.environ.get(name, "").strip() for name in WORLD_RANK_VARIABLES)
    return any(rank.isdigit() and rank != "0" for rank in ranks)


class Rank:
    """This process's place in a distributed run, and its exit rule."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..distributed.mpi import MPICommunicator, local_rank

        try:
            self.comm = MPICommunicator(abort_on_error=False)
        except XpnetError:
            # The same on every rank (mpi4py missing, XPNET_MPI_TIMEOUT):
            # rank 0 says it.
            if launched_as_rank_other_than_0():
                sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (until exit)
            raise
        self.agreed = False
        self.code = 1
        args.cleanup.append(self.finish)
        if self.comm.size == 1:
            print(
                "xpnet: --distributed with 1 rank: training as one process "
                "(launch N ranks with: mpiexec -n N xpnet train --distributed ...)",
                file=sys.stderr,
            )
        if self.comm.rank != 0:
            args.quiet, args.json = True, False
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (until exit)
        if args.device == "cuda":
            # One GPU per rank: the launcher's local rank picks it.
            args.device = f"cuda:{local_rank()}"

    @property
    def lead(self) -> bool:
        return self.comm.rank == 0

    def blas_share(self) -> tuple[int, str]:
        """This rank's BLAS threads by default, ``max(1, cores //
        ranks on this host)``, and how that was worked out (for the first
        line). Collective: every rank calls it."""
        from ..threads import cpu_count

        here = self.comm.ranks_on_this_host()
        cores = cpu_count()
        return max(1, cores // here), (
            f"{cores} core{'s' * (cores != 1)} / {here} rank{'s' * (here != 1)} "
            "on this host"
        )

    def check_options(self, args: argparse.Namespace, keys: tuple[str, ...]) -> None:
        """Refuse (one line, every rank) ranks started with different options.

        Also a barrier: no rank writes the checkpoint before every rank has
        checked the save and resume paths.
        """
        from ..distributed.data_parallel import check_same

        facts: dict[str, Any] = {
            "--" + key.replace("_", "-"): getattr(args, key, None)
            for key in (*keys, *SAME_ON_EVERY_RANK)
        }
        check_same(self.comm, facts, "start every rank with the same options")

    def agree_on_start(self, error: XpnetError | None) -> None:
        """Every rank has checked its own paths and settings (``error``: what
        it found wrong, or None); raise the same one-line error on every rank
        if any rank found something, so that all stop alike (no abort)."""
        from ..distributed import DistributedError

        found = self.comm.allgather(None if error is None else str(error))
        wrong = [(rank, message) for rank, message in enumerate(found) if message]
        if not wrong:
            return
        rank, message = wrong[0]
        if error is not None and str(error) == message and rank == 0:
            error.agreed = True  # type: ignore[attr-defined]
            raise error
        raise DistributedError(message if rank == 0 else f"rank {rank}: {message}")

    def failed(self, exc: BaseException) -> None:
        from ..distributed import is_collective

        self.agreed = is_collective(exc)
        if self.agreed and not self.lead:
            # Every rank stops alike with the same message: rank 0 says it.
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (until exit)
        if isinstance(exc, Exit):
            self.code = exc.code
        elif isinstance(exc, Terminated):
            self.code = exc.exit_code
        elif isinstance(exc, XpnetError):
            self.code = 2

    def finish(self) -> None:
        """After the command's message: abort all ranks unless every rank ends
        the same way (success or a collective error)."""
        if not self.agreed and self.comm.size > 1:
            print(
                f"xpnet: rank {self.comm.rank} of {self.comm.size} failed alone: "
                "aborting every rank",
                file=sys.stderr,
            )
            self.comm.abort(self.code)
