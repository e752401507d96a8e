"""The argument parser of every command (nothing heavy is imported here:
``xpnet --help`` loads neither the benchmark nor an array library's GPU
stack; each command's module is imported only when it runs)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from typing import NoReturn

from .. import __version__
from ..backend import BACKENDS
from ..figures import INSTALL_HINT
from .argtypes import (
    blas_threads as _blas_threads,
)
from .argtypes import (
    data_dir as _data_dir,
)
from .argtypes import (
    fraction as _fraction,
)
from .argtypes import (
    non_negative_float as _non_negative_float,
)
from .argtypes import (
    non_negative_int as _non_negative_int,
)
from .argtypes import (
    positive_float as _positive_float,
)
from .argtypes import (
    positive_int as _positive_int,
)
from .controls import add_control_options
from .options import TRAIN_OPTIONS, add_train_options

#: ``xpnet train --plot`` redraws after an epoch at most this often (seconds)
PLOT_EVERY_S = 30.0

PLOT_HINT = INSTALL_HINT


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors instead of the whole usage block."""

    #: the subcommand parsers by name (set on the top-level parser)
    commands: Mapping[str, argparse.ArgumentParser]

    #: the last error message, for the --json line of a usage error
    last_error = ""

    #: say nothing (a rank other than 0 of ``mpiexec ... --distributed``:
    #: every rank parses the same options, rank 0 says what is wrong)
    silent = False

    def error(self, message: str) -> NoReturn:
        line = f"{self.prog}: error: {message} (see {self.prog} --help)"
        _Parser.last_error = line
        self.exit(2, None if _Parser.silent else line + "\n")


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    """The ``run`` function of module ``xpnet.cli.<name>``, imported on use."""

    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(f"{__package__}.{name}")
        return int(module.run(args) or 0)

    return run


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if CuPy and a GPU work, else CPU), cpu, cuda (or gpu) or "
        "cuda:N (default: auto)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="array library; default numpy on cpu, cupy on cuda",
    )


def _add_data_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--dataset",
        default=default,
        metavar="NAME|PATH",
        help="mnist, fashion-mnist, mnist-sample (bundled, offline), an .npz with "
        "x_train, y_train, x_test, y_test, a folder of MNIST-named IDX files, or "
        "IMAGES,LABELS[,TEST_IMAGES,TEST_LABELS] IDX files"
        + (
            " (default: mnist, or mnist-sample when MNIST is neither cached nor "
            "downloadable)"
            if default == "mnist"
            else f" (default: {default})"
            if default
            else " (default: the checkpoint's dataset)"
        ),
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        type=_data_dir,
        metavar="DIR",
        help="dataset cache directory (default: $XPNET_DATA, else the user cache "
        "dir, e.g. ~/.cache/xpnet)",
    )


def build_parser() -> _Parser:
    parser = _Parser(
        prog="xpnet",
        description="Train multilayer perceptrons on NumPy (CPU) or CuPy (CUDA) "
        "with one Array-API code path.",
    )
    parser.add_argument("--version", action="version", version=f"xpnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = sub.choices  # filled in as the commands are added

    train = sub.add_parser(
        "train",
        help="train an MLP (default: MNIST)",
        description="Train an MLP with softmax cross-entropy "
        "(by default) and report per-epoch loss, accuracy and "
        "throughput.",
    )
    _add_device_options(train)
    _add_data_options(train, "mnist")
    # The recorded options in three runs, --epochs and the controls between.
    add_train_options(train, TRAIN_OPTIONS[: TRAIN_OPTIONS.index("batch_size")])
    add_control_options(
        train,
        {
            "positive_int": _positive_int,
            "non_negative_int": _non_negative_int,
            "positive_float": _positive_float,
            "non_negative_float": _non_negative_float,
            "fraction": _fraction,
        },
    )
    add_train_options(train, ("batch_size",))
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=10,
        help="total epochs to train; a resumed run stops there too, so re-running "
        "the same command finishes the job (default: 10)",
    )
    add_train_options(train, TRAIN_OPTIONS[TRAIN_OPTIONS.index("seed") :])
    train.add_argument(
        "--blas-threads",
        type=_blas_threads,
        default=None,
        metavar="N|auto",
        help="BLAS threads on the CPU: N, or auto (the cores other running "
        "processes leave free: much faster on a busy CPU, but float32 results then "
        "depend on the load, as the thread count changes a matmul's sums) "
        "(default: the BLAS's own count; OPENBLAS_NUM_THREADS and the like win)",
    )
    train.add_argument(
        "--save",
        metavar="PATH.npz",
        default=None,
        help="checkpoint file, rewritten atomically at the start and after every "
        "epoch, so Ctrl-C keeps the last completed epoch; an existing file is "
        "never replaced without --overwrite (default with --resume: the resumed "
        "file)",
    )
    train.add_argument(
        "--resume",
        metavar="PATH.npz",
        default=None,
        help="continue a saved run (its model, optimizer, data options and RNG) "
        "up to --epochs in total, saving to the same file unless --save names "
        "another",
    )
    train.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="continue --save's checkpoint if it exists, else start it: one "
        "command that survives being killed and re-run",
    )
    train.add_argument(
        "--plot",
        metavar="PATH.png",
        default=None,
        help="draw loss and accuracy per epoch to this picture (.png, .svg, .pdf) "
        "when the run ends, also when it is stopped, and at most every "
        f"{PLOT_EVERY_S:.0f} s while it runs (needs matplotlib: {PLOT_HINT})",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --save (and --plot) to replace an existing file that is not "
        "the run's own",
    )
    train.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI, one rank per process: mpiexec -n N xpnet "
        "train --distributed ...; --batch-size is the global batch, rank 0 "
        "prints and saves (needs mpi4py: pip install 'xpnet[mpich]')",
    )
    train.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (config, device, history) as "
        "the last line of stdout",
    )
    train.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar, start-up lines or per-epoch lines (the final line "
        "stays)",
    )
    train.set_defaults(func=_command("train"))

    evaluate = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    evaluate.add_argument("model", metavar="MODEL", help="checkpoint .npz")
    _add_data_options(evaluate, None)
    _add_device_options(evaluate)
    evaluate.add_argument(
        "--json", action="store_true", help="print the result as one JSON object"
    )
    evaluate.add_argument(
        "--plot",
        metavar="PATH.png",
        default=None,
        help="draw the test set's confusion matrix to this picture (.png, .svg, "
        f".pdf; needs matplotlib: {PLOT_HINT})",
    )
    evaluate.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --plot to replace an existing file that xpnet did not draw "
        "for this checkpoint",
    )
    evaluate.set_defaults(func=_command("evaluate"))

    plot = sub.add_parser(
        "plot",
        help="draw a checkpoint's loss and accuracy per epoch",
        description="Draw the loss and accuracy per epoch (train, validation and "
        "test) recorded in a checkpoint to a picture, with matplotlib "
        f"({PLOT_HINT}).",
    )
    plot.add_argument("model", metavar="MODEL", help="checkpoint .npz")
    plot.add_argument(
        "-o",
        "--output",
        metavar="PATH.png",
        default=None,
        help="picture to write: .png, .svg or .pdf (default: MODEL with .png)",
    )
    plot.add_argument(
        "--overwrite",
        action="store_true",
        help="allow replacing an existing file that xpnet did not draw for this "
        "checkpoint",
    )
    plot.add_argument(
        "--quiet", action="store_true", help="no line naming the written file"
    )
    plot.set_defaults(func=_command("plot"))

    predict = sub.add_parser(
        "predict",
        help="classify images",
        description="Classify inputs: an image file (PNG/JPEG/PGM, read with Pillow), "
        "a .npy array (one 28x28 image, a flat vector, or a batch), or "
        "DATASET:INDEX for a test-set image (e.g. mnist-sample:7).",
    )
    predict.add_argument("model", metavar="MODEL", help="checkpoint .npz")
    predict.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="image file (PNG/JPEG/PGM), .npy array, or DATASET:INDEX",
    )
    predict.add_argument(
        "--data-dir",
        default=None,
        type=_data_dir,
        metavar="DIR",
        help="dataset cache directory for DATASET:INDEX inputs",
    )
    _add_device_options(predict)
    predict.add_argument(
        "--json", action="store_true", help="print the results as one JSON object"
    )
    predict.set_defaults(func=_command("predict"))

    export = sub.add_parser(
        "export",
        help="write a checkpoint as an ONNX graph",
        description="Write a checkpoint's network, with its input scaling and "
        "standardisation, as an ONNX graph (opset 17; needs pip install "
        "'xpnet[onnx]'). The graph takes the raw inputs xpnet predict takes "
        "(input 'input', (N, features) float32) and outputs 'probabilities' "
        "(classifiers) or 'values' (regressors). Deskewed models cannot be "
        "exported.",
    )
    export.add_argument("model", metavar="MODEL", help="checkpoint .npz to export")
    export.add_argument(
        "output", metavar="OUTPUT", help="the .onnx file to write (atomically)"
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it exists (default: refuse)",
    )
    export.add_argument(
        "--json",
        action="store_true",
        help="print the result (output file, opset, input and output) as one "
        "JSON object",
    )
    export.set_defaults(func=_command("export"))

    info = sub.add_parser("info", help="backends, devices, GPU, versions")
    info.add_argument(
        "--json", action="store_true", help="print the facts as one JSON object"
    )
    info.set_defaults(func=_command("info"))

    from ..bench.cli import add_bench_parser

    add_bench_parser(sub)
    return parser
