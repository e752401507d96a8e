"""ONNX export: a trained model and its affine input preprocessing as one graph.

The graph (ONNX opset :data:`OPSET`, IR version :data:`IR_VERSION`, built with
the ``onnx`` package's helper API and checked by ``onnx.checker``):

- input ``"input"``: ``(N, features)`` float32, ``N`` dynamic, in the same raw
  units as ``xpnet predict`` takes them (MNIST: pixels 0-255). The recorded
  preprocessing is inside the graph: ``x / scale``, then ``(x - mean) / std``,
  in float32 as :func:`xpnet.preprocessing.transform` computes them. Unlike
  ``xpnet predict``, the graph does not guess the unit from the values: it
  always divides by the recorded ``scale`` (255 for pixels), so inputs
  already scaled to [0, 1] must be multiplied back (and a model trained on
  data that needed no scaling takes that data's units). Deskewing is not
  affine and cannot be expressed in ONNX: a deskewed model is refused.
- the layers, each through :data:`LAYER_BUILDERS` (class name -> node builder).
  Activations whose ONNX operator computes xpnet's formula use it (Relu,
  LeakyRelu, Sigmoid, Tanh, Elu, Softmax); the others are written with
  primitive operators in xpnet's exact formula: GELU is xpnet's **tanh
  approximation** ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``,
  softplus ``max(x, 0) + log(1 + exp(-|x|))`` (xpnet's ``logaddexp(0, x)``),
  SiLU ``x * sigmoid(x)``.
- the output mapping of the loss, through :data:`OUTPUT_BUILDERS`: softmax for
  cross-entropy on logits, sigmoid for BCE on logits, none for MSE (or a loss
  on probabilities), as ``xpnet predict`` reports them. The output is
  ``"probabilities"`` ``(N, outputs)`` for classifiers and ``"values"``
  ``(N, outputs)`` for regressors.

Weights are stored as float32 whatever the model's dtype. A layer or loss with
no entry in the tables is refused with one line rather than exported wrongly;
a new one is one entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .atomic import atomic_write
from .backend import to_numpy
from .errors import XpnetError
from .layers import Layer
from .losses import Loss
from .preprocessing import Preprocessing

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .model import Sequential

__all__ = [
    "IR_VERSION",
    "LAYER_BUILDERS",
    "OPSET",
    "OUTPUT_BUILDERS",
    "OnnxExportError",
    "export_onnx",
    "require_onnx",
]

#: the ai.onnx opset of exported graphs (17: every operator used here, and
#: runtimes from ONNX Runtime 1.13 on)
OPSET = 17
#: the IR version that goes with :data:`OPSET` (newer onnx packages would
#: write a newer one that older runtimes refuse)
IR_VERSION = 8

INSTALL_HINT = "pip install 'xpnet[onnx]'"


class OnnxExportError(XpnetError):
    """The model cannot be exported to ONNX (or onnx is not installed)."""


class GraphBuilder:
    """Nodes and float32 constants of one graph, with fresh value names."""

    def __init__(self, helper: Any, numpy_helper: Any) -> None:
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value: Any, stem: str = "c") -> str:
        """A float32 constant (a scalar, or an array of any shape)."""
        name = self._name(stem)
        array = np.asarray(value, dtype=np.float32)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        """One node ``op_type(*inputs)``; returns its output's name."""
        out = self._name(op_type.lower())
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), [out], **attributes)
        )
        return out


#: builder(graph, layer, x) -> name of the layer's output
LayerBuilder = Callable[[GraphBuilder, Layer, str], str]


def _dense(g: GraphBuilder, layer: Layer, x: str) -> str:
    # Gemm: x @ W + b, W: (in_features, out_features), b: (out_features,)
    W = to_numpy(layer.params["W"])
    b = to_numpy(layer.params["b"])
    return g.op("Gemm", x, g.const(W, "W"), g.const(b, "b"))


def _sigmoid(g: GraphBuilder, x: str) -> str:
    return g.op("Sigmoid", x)


def _gelu(g: GraphBuilder, layer: Layer, x: str) -> str:
    # xpnet's tanh approximation, in xpnet's order of operations:
    # t = tanh(C * (x + ((0.044715 x) x) x)); out = (0.5 x) (1 + t)
    from .activations import _GELU_C

    cube = g.op("Mul", g.op("Mul", g.op("Mul", g.const(0.044715), x), x), x)
    t = g.op("Tanh", g.op("Mul", g.const(_GELU_C), g.op("Add", x, cube)))
    half_x = g.op("Mul", g.const(0.5), x)
    return g.op("Mul", half_x, g.op("Add", g.const(1.0), t))


def _softplus(g: GraphBuilder, layer: Layer, x: str) -> str:
    # logaddexp(0, x) = max(x, 0) + log1p(exp(-|x|)); ONNX has no Log1p, and
    # log(1 + e) differs from log1p(e) by less than 6e-8 for e in [0, 1].
    e = g.op("Exp", g.op("Neg", g.op("Abs", x)))
    return g.op("Add", g.op("Relu", x), g.op("Log", g.op("Add", g.const(1.0), e)))


def _silu(g: GraphBuilder, layer: Layer, x: str) -> str:
    return g.op("Mul", x, _sigmoid(g, x))


LAYER_BUILDERS: dict[str, LayerBuilder] = {
    "Dense": _dense,
    "Identity": lambda g, layer, x: x,
    "ReLU": lambda g, layer, x: g.op("Relu", x),
    "LeakyReLU": lambda g, layer, x: g.op(
        "LeakyRelu",
        x,
        alpha=float(layer.alpha),  # type: ignore[attr-defined]
    ),
    "Sigmoid": lambda g, layer, x: _sigmoid(g, x),
    "Tanh": lambda g, layer, x: g.op("Tanh", x),
    "GELU": _gelu,
    # ONNX Elu: x for x >= 0, alpha (exp(x) - 1) otherwise: xpnet's formula
    # (which uses expm1; the two differ by under 1e-7 in float32).
    "ELU": lambda g, layer, x: g.op(
        "Elu",
        x,
        alpha=float(layer.alpha),  # type: ignore[attr-defined]
    ),
    "Softplus": _softplus,
    "SiLU": _silu,
    "Softmax": lambda g, layer, x: g.op("Softmax", x, axis=1),
}
"""xpnet layer class name -> node builder. Keyed by the exact class name (as
checkpoints record it), so a subclass, which may compute something else, needs
an entry of its own."""

#: builder(graph, loss, outputs) -> name of what predict reports
OutputBuilder = Callable[[GraphBuilder, Loss, str], str]


def _from_logits(mapping: str) -> OutputBuilder:
    def build(g: GraphBuilder, loss: Loss, x: str) -> str:
        if not getattr(loss, "from_logits", False):
            return x  # the model already outputs probabilities
        return g.op("Softmax", x, axis=1) if mapping == "softmax" else _sigmoid(g, x)

    return build


OUTPUT_BUILDERS: dict[str, OutputBuilder] = {
    "CrossEntropy": _from_logits("softmax"),
    "BinaryCrossEntropy": _from_logits("sigmoid"),
    "MeanSquaredError": lambda g, loss, x: x,
    "PoissonDeviance": lambda g, loss, x: g.op("Exp", x),
}
"""xpnet loss class name -> the mapping of the network's outputs that
``Loss.probabilities`` (and so ``xpnet predict``) applies."""


def require_onnx() -> Any:
    """The onnx module, or a one-line error saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise OnnxExportError(
            f"exporting to ONNX needs the onnx package: {INSTALL_HINT}"
        ) from None
    return onnx


def _preprocessing_nodes(g: GraphBuilder, steps: Preprocessing, x: str) -> str:
    """``x`` scaled and standardised as :func:`xpnet.preprocessing.transform`."""
    if steps.deskew:
        raise OnnxExportError(
            "the model was trained on deskewed images, and deskewing cannot be "
            "expressed in ONNX: retrain without --deskew to export it"
        )
    if steps.scale is not None and steps.scale != 1.0:
        x = g.op("Div", x, g.const(steps.scale, "scale"))
    if steps.mean is not None and steps.std is not None:
        x = g.op("Sub", x, g.const(steps.mean, "mean"))
        x = g.op("Div", x, g.const(steps.std, "std"))
    return x


def _builder(table: dict[str, Any], obj: Any, what: str) -> Any:
    name = type(obj).__name__
    if name not in table:
        raise OnnxExportError(
            f"cannot export {what} {name} to ONNX: xpnet.onnx_export has no "
            f"builder for it (known: {', '.join(table)}); add one to "
            f"xpnet.onnx_export.{'LAYER' if what == 'layer' else 'OUTPUT'}_BUILDERS"
        )
    return table[name]


def _source(
    source: Sequential | Checkpoint | str | os.PathLike,
    preprocessing: Preprocessing | None,
) -> tuple[Sequential, Preprocessing, list[str] | None]:
    """``(model, preprocessing, class names)`` of what export_onnx was given."""
    from .checkpoint import Checkpoint
    from .model import Sequential

    if isinstance(source, str | os.PathLike):
        source = Checkpoint.from_file(source, "cpu", "numpy")
    if isinstance(source, Checkpoint):
        names = source.dataset.get("class_names")
        steps = source.preprocessing if preprocessing is None else preprocessing
        steps.require_known("the checkpoint")
        return source.model, steps, list(names) if names else None
    if isinstance(source, Sequential):
        return source, preprocessing or Preprocessing(), None
    raise OnnxExportError(
        f"export_onnx needs a Sequential model, a Checkpoint or a checkpoint path, "
        f"got {type(source).__name__}"
    )


def export_onnx(
    source: Sequential | Checkpoint | str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    preprocessing: Preprocessing | None = None,
    exclusive: bool = False,
) -> Any:
    """The model of ``source`` as an ONNX ``ModelProto`` (see the module doc).

    Args:
        source: a :class:`~xpnet.model.Sequential`, a
            :class:`~xpnet.checkpoint.Checkpoint` or the path of a checkpoint
            ``.npz`` (its preprocessing and class names come along).
        path: where to write the ``.onnx`` file (atomically, replacing an
            existing file), or None to only return the graph.
        exclusive: ``path`` is a new file: refuse (one line) to replace
            anything, also a file another process made while this one worked.
        preprocessing: the input steps to put in the graph; default the
            checkpoint's (none for a bare model: the graph then takes the
            model's own inputs).

    Returns:
        The checked ``onnx.ModelProto``: input ``"input"`` ``(N, features)``
        float32, output ``"probabilities"`` (classifiers) or ``"values"``
        (regressors) ``(N, outputs)`` float32.

    Raises:
        OnnxExportError: onnx is not installed, the model was trained on
            deskewed images, or it has a layer or loss with no ONNX builder.
    """
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    model, steps, class_names = _source(source, preprocessing)
    builders = [_builder(LAYER_BUILDERS, layer, "layer") for layer in model.layers]
    output_builder = _builder(OUTPUT_BUILDERS, model.loss, "loss")

    g = GraphBuilder(helper, numpy_helper)
    x = _preprocessing_nodes(g, steps, "input")
    for build, layer in zip(builders, model.layers, strict=True):
        x = build(g, layer, x)
    x = output_builder(g, model.loss, x)
    task = model.task or "classification"
    output = "values" if task == "regression" else "probabilities"
    # The graph's last value gets the output's name (an Identity node when the
    # input itself would be the output, which a graph cannot express otherwise).
    if g.nodes and g.nodes[-1].output[0] == x:
        g.nodes[-1].output[0] = output
    else:
        g.nodes.append(helper.make_node("Identity", [x], [output]))

    graph = helper.make_graph(
        g.nodes,
        "xpnet",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["N", model.in_features]
            )
        ],
        [
            helper.make_tensor_value_info(
                output, TensorProto.FLOAT, ["N", model.out_features]
            )
        ],
        initializer=g.initializers,
    )
    proto = helper.make_model(
        graph,
        producer_name="xpnet",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=f"xpnet {task} model: {model!r}",
    )
    proto.ir_version = IR_VERSION
    meta = {
        "task": task,
        "preprocessing": json.dumps(steps.to_meta()),
        **({"class_names": json.dumps(class_names)} if class_names else {}),
    }
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        _write(proto, Path(path), exclusive)
    return proto


def _write(proto: Any, path: Path, exclusive: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, exclusive=exclusive, follow_links=True) as handle:
            handle.write(proto.SerializeToString())
    except XpnetError as exc:
        raise OnnxExportError(str(exc)) from None
    except OSError as exc:
        raise OnnxExportError(
            f"cannot write {str(path)!r}: {exc.strerror or exc}"
        ) from None
