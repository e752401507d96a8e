"""``xpnet.save`` and ``xpnet.load``: a model in one file, with how its inputs
are prepared.

A model takes inputs already prepared (e.g. pixels divided by 255); the file
must say how, or the command line (``xpnet evaluate``/``predict``/``export``)
would feed it raw values. :func:`save` records what the caller states, else
what ``fit`` saw (integer inputs were used as they are; floats may have been
scaled, so their preparation is recorded as unknown and the command line
refuses to guess). :func:`load` returns the model, with
``model.preprocessing`` set when it is known.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .atomic import OutputError
from .backend import Backend
from .model import Sequential
from .preprocessing import Preprocessing

__all__ = ["load", "save"]


def save(
    path: str | os.PathLike,
    model: Sequential,
    preprocessing: Preprocessing | dict[str, Any] | str | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (weights, optimizer state, task) to ``path`` (``.npz``).

    Args:
        path: the checkpoint file, written atomically, with a ``.json`` copy
            of its metadata beside it.
        model: a :class:`~xpnet.model.Sequential`.
        preprocessing: how raw inputs become the model's: an
            :class:`xpnet.Preprocessing` (e.g. ``Preprocessing(scale=255)``
            for pixels divided by 255; ``mean``/``std`` for standardised
            features), its fields as a dict, or ``"none"`` (inputs used as
            they are). Default: ``model.preprocessing`` (a loaded model's),
            else what ``fit`` saw: integer inputs are recorded as used as they
            are, float inputs as unknown.
        overwrite: replace ``path`` and its ``.json`` copy if they exist.
            Without it an existing file (any file, even one xpnet wrote
            earlier: like ``ModelCheckpoint``) is refused and left as it is.
            A symbolic link is written through to its target (a dangling
            link's target is created).

    Returns:
        The path written.

    Raises:
        OutputError: ``path`` or its ``.json`` copy exists (one line), unless
            ``overwrite``; or it is not a file xpnet may write.
    """
    from .checkpoint import Checkpoint, stated_preprocessing

    steps = stated_preprocessing(model, preprocessing)
    record = Checkpoint(model=model, preprocessing=steps)
    if not overwrite:
        _refuse_existing(Path(path))
    # exclusive: a file that appears while this writes is refused too.
    return record.to_file(path, exclusive=not overwrite)


def _refuse_existing(path: Path) -> None:
    """Refuse a checkpoint name (or its ``.json`` copy) that is taken."""
    from .checkpoint import CheckpointError, checkpoint_name_problem, sidecar_path

    problem = checkpoint_name_problem(path)
    if problem:
        raise CheckpointError(f"checkpoint path {str(path)!r} {problem}")
    for taken in (path, sidecar_path(path)):
        # Like a link to a file, a dangling link is written through: its
        # target, which does not exist yet, is created.
        if taken.exists():
            raise OutputError(
                f"{str(taken)!r} already exists: pass overwrite=True to replace "
                "it, or choose another name"
            )


def load(
    path: str | os.PathLike,
    device: str | Backend = "auto",
    backend: str | None = None,
) -> Sequential:
    """The model saved at ``path`` (by :func:`save` or ``xpnet train``), on
    ``device``; it continues training where the saved one stopped.

    ``model.preprocessing`` is the recorded :class:`xpnet.Preprocessing`
    (``model.predict(model.preprocessing.apply(raw))``), or None when the
    file does not say. A loaded model refuses to answer with NaN or infinity
    (``predict``/``evaluate`` raise :class:`~xpnet.errors.XpnetError`).
    A bad file raises :class:`~xpnet.checkpoint.CheckpointError` (one line)
    before anything is built.
    """
    from .checkpoint import Checkpoint

    return Checkpoint.from_file(path, device, backend).model
