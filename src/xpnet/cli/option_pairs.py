"""Options that would do nothing in the company of others are refused.

An option that a run silently ignores (``--momentum`` for Adam, ``--overwrite``
with no file to overwrite) misleads whoever typed it: they believe they set
something. :func:`refuse_idle_options` checks the combinations each command
could ignore, from the options given on the command line (``args.given``),
before any work is done; each refusal is one :class:`UsageError` line saying
what to drop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError


def refuse_idle_options(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for a given option that the others make idle."""
    check = _CHECKS.get(args.command)
    if check is not None:
        check(args, args.given)


def _train(args: argparse.Namespace, given: set[str]) -> None:
    if args.optimizer in ("adam", "adamw"):
        for key, flag in (("momentum", "--momentum"), ("nesterov", "--nesterov")):
            if key in given:
                raise UsageError(
                    f"{flag} is an SGD setting and --optimizer {args.optimizer} "
                    f"has no use for it ({args.optimizer} keeps its own moment "
                    f"estimates): drop {flag}, or use --optimizer sgd"
                )
    if "overwrite" in given and "save" not in given and "plot" not in given:
        raise UsageError(
            "--overwrite replaces an existing --save or --plot file, and neither "
            "is given"
            + (" (--resume saves back to its own file)" if "resume" in given else "")
            + ": drop --overwrite, or name the file with --save PATH.npz"
        )
    _resumed_file_overwrite(args, given)
    _data_dir(args, given)
    if "scale" in given and args.no_scale:
        raise UsageError(
            "--scale MAX divides the features and --no-scale keeps them as they "
            "are: choose one"
        )
    device = str(args.device).lower()
    if "blas_threads" in given and device.startswith("cuda"):
        raise UsageError(
            f"--blas-threads sets the CPU's BLAS threads and --device {args.device} "
            "trains on the GPU: drop --blas-threads"
        )


def _resumed_file_overwrite(args: argparse.Namespace, given: set[str]) -> None:
    """``--resume R --save R --overwrite``: a resumed run replaces its own
    file anyway, so --overwrite (with no --plot to apply to) does nothing."""
    if not {"overwrite", "resume", "save"} <= given or "plot" in given:
        return
    from .resume import resolved

    if resolved(Path(args.save)) == resolved(Path(args.resume)):
        raise UsageError(
            f"--overwrite replaces an existing file, and --save {args.save} is the "
            "resumed checkpoint itself, which a resumed run saves back to anyway: "
            "drop --overwrite"
        )


def _data_dir(args: argparse.Namespace, given: set[str]) -> None:
    if "data_dir" in given and "dataset" in given and not _cached(args.dataset):
        raise UsageError(
            f"--data-dir is where mnist and fashion-mnist are cached, and "
            f"--dataset {args.dataset} is not read from it: drop --data-dir"
        )


def _evaluate(args: argparse.Namespace, given: set[str]) -> None:
    _data_dir(args, given)
    if "overwrite" in given and "plot" not in given:
        raise UsageError(
            "--overwrite lets --plot replace an existing picture, and --plot is "
            "not given: drop --overwrite"
        )


def _predict(args: argparse.Namespace, given: set[str]) -> None:
    if "data_dir" in given and all(Path(text).exists() for text in args.inputs):
        raise UsageError(
            "--data-dir is where DATASET:INDEX inputs are read from, and every "
            "input is a file: drop --data-dir"
        )


def _cached(dataset: str) -> bool:
    """Whether ``--dataset`` names a dataset read from the cache directory."""
    from ..datasets import DATASET_NAMES, SAMPLE_NAME, _canonical_name

    name = _canonical_name(dataset)
    return name in DATASET_NAMES and name != SAMPLE_NAME


_CHECKS = {"train": _train, "evaluate": _evaluate, "predict": _predict}
