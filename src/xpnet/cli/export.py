"""``xpnet export``: a checkpoint as an ONNX graph (see :mod:`xpnet.onnx_export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError, print_json, say


def run(args: argparse.Namespace) -> int:
    from ..atomic import OutputError, check_output_target
    from ..checkpoint import Checkpoint
    from ..onnx_export import OPSET, export_onnx, require_onnx

    require_onnx()  # before any work: without onnx, say how to install it
    source, target = Path(args.model), Path(args.output)
    # The suffix rule keeps --overwrite off the files a run owns (the .npz,
    # its .json copy, the lock) and off the training data, as --save's .npz does.
    if target.suffix.lower() != ".onnx":
        raise UsageError(
            f"{args.output!r}: an ONNX file's name must end in .onnx; "
            "name the output MODEL.onnx"
        )
    if target.exists() and source.exists() and target.samefile(source):
        raise UsageError(
            f"{args.output!r} is the checkpoint itself: name another output file"
        )
    try:  # a FIFO would block, a device is not ours: refused before any work
        check_output_target(target)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    if (target.exists() or target.is_symlink()) and not args.overwrite:
        raise UsageError(
            f"{args.output!r} already exists: pass --overwrite to replace it, "
            "or name another file"
        )
    # The graph holds host copies of the weights: the CPU is all it needs.
    ckpt = Checkpoint.from_file(source, "cpu", "numpy")
    ckpt.preprocessing.require_known(f"checkpoint {args.model!r}")
    # A new file is created exclusively: of two exports racing for one name,
    # the second is refused instead of silently replacing the first.
    proto = export_onnx(ckpt, target, exclusive=not args.overwrite)
    model = ckpt.model
    output = proto.graph.output[0].name
    report = {
        "model": args.model,
        "output": args.output,
        "opset": OPSET,
        "input": {"name": "input", "shape": ["N", model.in_features]},
        "result": {"name": output, "shape": ["N", model.out_features]},
    }
    args.report.update(report)
    if args.json:
        print_json({"command": "export", **report})
    else:
        say(
            args,
            f"wrote {args.output} (ONNX opset {OPSET}): input 'input' "
            f"(N, {model.in_features}) float32 in the units xpnet predict takes, "
            f"output '{output}' (N, {model.out_features})",
        )
    return 0
