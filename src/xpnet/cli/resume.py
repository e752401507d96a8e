"""How ``xpnet train`` resumes and where it saves: the rules of the README's
"save, resume, overwrite" section, checked before any work is done."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..atomic import TEMP_NAME_EXTRA
from ..filekinds import longest_name, not_a_file
from .common import UsageError
from .options import (
    ARCHITECTURE,
    DATA,
    HONOURED,
    OLD_OPTION_DEFAULTS,
    group_of,
)
from .options import TRAIN_OPTIONS as _TRAIN_OPTIONS

#: bytes the longest file made beside a checkpoint adds to its name: the
#: temporary file of its .json copy, ``.NAME.json.xpnet-tmp-XXXXXXXX.tmp``
SIDE_FILE_BYTES = len(".json") + TEMP_NAME_EXTRA

#: every option a checkpoint records; its group says how a resumed run
#: treats a different value (see :mod:`.options`)
TRAIN_OPTIONS = _TRAIN_OPTIONS


def data_paths(name: str) -> list[Path] | None:
    """The files (or folder) a BYO dataset name points at; None for a named
    dataset such as mnist. ``IMAGES,LABELS,...`` IDX files give several."""
    from ..datasets import DATASET_NAMES

    if name.strip().lower() in DATASET_NAMES:
        return None
    if "," in name and not name.endswith(".npz"):
        return [Path(part.strip()) for part in name.split(",")]
    if name.endswith(".npz") or Path(name).exists():
        return [Path(name)]
    return None


def looks_like_path(name: str) -> bool:
    return data_paths(name) is not None


def data_exists(name: str) -> bool:
    return all(p.exists() for p in data_paths(name) or [])


def dataset_identity(name: str) -> str:
    """A dataset name as stored: BYO files resolved, so resuming works anywhere."""
    paths = data_paths(name)
    return ",".join(str(resolved(p)) for p in paths) if paths else name


def resolved(path: Path) -> Path:
    """``path.resolve()``, or one line saying why it cannot be (a symbolic
    link loop, which Python reports as a RuntimeError)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        why = not_a_file(path) or "cannot be followed to a file"
        raise UsageError(f"{str(path)!r} {why}") from None


def same_dataset(a: str, b: str) -> bool:
    if looks_like_path(a) or looks_like_path(b):
        return dataset_identity(a) == dataset_identity(b)
    return a.strip().lower() == b.strip().lower()


def _same_option(key: str, given: Any, saved: Any) -> bool:
    if key == "dataset":
        return same_dataset(str(given), str(saved))
    if isinstance(given, float) or isinstance(saved, float):
        return saved is not None and given is not None and float(given) == saved
    if isinstance(given, list | tuple):
        return list(given) == list(saved or [])
    return bool(given == saved)


def _flag(key: str, value: Any) -> str:
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return name if value else f"no {name}"
    if value is None:  # an option the run was started without
        return f"no {name}"
    if isinstance(value, list):
        value = ",".join(map(str, value)) or "none"
    return f"{name} {value}"


def reconcile_resume(
    args: argparse.Namespace, saved: dict[str, Any], where: str
) -> list[str]:
    """Take the checkpoint's options; refuse given ones that contradict them.

    Returns notices about options that are honoured although they differ.
    """
    notices = []
    if saved:
        # Before --schedule, --lr-decay alone chose inverse-time decay.
        schedule = "inverse-time" if saved.get("lr_decay") else "constant"
        saved = {**OLD_OPTION_DEFAULTS, "schedule": schedule, **saved}
    for key in TRAIN_OPTIONS:
        if key not in saved:
            continue
        if key in args.given and not _same_option(key, getattr(args, key), saved[key]):
            given, old = _flag(key, getattr(args, key)), _flag(key, saved[key])
            if group_of(key) == HONOURED:
                notices.append(
                    f"batch size {saved[key]} -> {args.batch_size} from this epoch on "
                    "(the checkpoint will record the new one)"
                )
                continue
            if key == "dataset" and looks_like_path(saved[key]):
                if not data_exists(saved[key]):
                    # The data moved since it was trained on: follow it.
                    notices.append(f"dataset {saved[key]} not found; using {given}")
                    continue
            if group_of(key) in (ARCHITECTURE, DATA):
                why = "a resumed run keeps the model and data it was trained on"
            else:
                why = "a resumed run continues its optimizer and random state"
            raise UsageError(
                f"{given} contradicts checkpoint {where!r} ({old}): {why}; drop the "
                "option, or start a new run without --resume"
            )
        setattr(args, key, saved[key])
    stored = saved.get("dataset")
    if (
        "dataset" not in args.given
        and isinstance(stored, str)
        and looks_like_path(stored)
        and not data_exists(stored)
    ):
        raise UsageError(
            f"the dataset this run was trained on, {stored}, is gone: pass its new "
            "location with --dataset"
        )
    return notices


def refuse_changed_data(saved: dict[str, Any], data: Any, where: str) -> None:
    """Refuse to resume on a bring-your-own dataset whose content differs
    from what the checkpoint recorded (replaced in place under its name)."""
    from ..fingerprint import changes

    changed = changes(saved.get("fingerprint"), data.fingerprint)
    if changed:
        raise UsageError(
            f"dataset {data.name!r} is not the data checkpoint {where!r} was "
            f"trained on: {changed}; resume with that data, or start a new run "
            "without --resume"
        )


class SaveTarget:
    """Where this run writes its checkpoint, checked before any work is done.

    ``path`` is the name given; a symbolic link is written through to its
    target (``notice`` says so), which must be a regular file, like the
    ``.json`` copy beside it. ``exclusive``: the file is new to this run, so
    its first save refuses to replace anything another process put there.
    """

    def __init__(self, args: argparse.Namespace, resume: str | None) -> None:
        from ..atomic import OutputError, check_output_target, write_target
        from ..checkpoint import sidecar_path

        self.path = Path(args.save) if args.save else None
        self.epoch: int | None = None  # the epoch the file on disk holds
        self.sidecar_epoch: int | None = None  # and the epoch its .json copy holds
        self.notice: str | None = None
        self.exclusive = False
        if self.path is None:
            return
        path = self.path
        # The option that named the file: --save, or --resume saving back.
        option = "--save" if "save" in args.given else "--resume"
        from ..checkpoint import checkpoint_name_problem

        problem = checkpoint_name_problem(path)
        if problem:
            raise UsageError(f"{option} {str(path)!r}: a checkpoint path {problem}")
        room = (
            longest_name(next((p for p in path.parents if p.is_dir()), Path(".")))
            - SIDE_FILE_BYTES
        )
        if len(os.fsencode(path.name)) > room:
            raise UsageError(
                f"{option}: the file name {path.name[:40]!r}... is "
                f"{len(os.fsencode(path.name))} bytes long; at most {room} fit (the "
                f"files written beside it add {SIDE_FILE_BYTES} to a "
                f"{room + SIDE_FILE_BYTES}-byte limit): choose a shorter name"
            )
        sidecar = sidecar_path(path)
        for where in (path, sidecar):
            if where.is_dir():
                raise UsageError(
                    f"{option} {str(path)!r}: {str(where)!r} is a directory; "
                    f"give a file name such as {str(path.with_name('run.npz'))!r}"
                )
            try:
                check_output_target(where, option)
            except OutputError as exc:
                raise UsageError(str(exc)) from None
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise UsageError(
                f"{option} {str(path)!r}: {str(parent)!r} is a file, not a directory"
            )
        dataset = getattr(args, "dataset", None)
        if dataset and resolved(path) in [
            resolved(p) for p in data_paths(dataset) or []
        ]:
            raise UsageError(
                f"{option} {str(path)!r} is the training data file: save the "
                "checkpoint under another name"
            )
        own = resume is not None and resolved(Path(resume)) == resolved(path)
        if not own and not args.overwrite:
            if sidecar.exists() and not path.exists():
                # A stray copy: there is no checkpoint to --resume.
                raise UsageError(
                    f"--save {str(path)!r}: {str(sidecar)!r} already exists without "
                    f"{str(path)!r} (left by an earlier run?): delete it, or "
                    "replace it with --overwrite"
                )
            for where in (path, sidecar):
                # A dangling link is no file: the save creates its target.
                if where.exists():
                    raise UsageError(
                        f"--save {str(path)!r}: {str(where)!r} already exists: "
                        f"continue it with --resume {str(path)!r} (or "
                        "--resume-if-exists), or replace it with --overwrite"
                    )
            self.exclusive = True
        if path.is_symlink() and not write_target(path).parent.is_dir():
            raise UsageError(
                f"{option} {str(path)!r} is a symbolic link to "
                f"{os.readlink(path)!r}, whose folder does not exist: create it, "
                "or remove the link"
            )
        if path.is_symlink():
            self.notice = (
                f"{option} {str(path)!r} is a symbolic link: the checkpoint is "
                f"written to its target {str(write_target(path))!r} (the link "
                "stays)"
            )

    def holds(self) -> str:
        if self.path is None:
            return "nothing was saved (use --save PATH.npz to keep checkpoints)"
        if self.epoch is None:
            return f"{self.path} was not written"
        return f"{self.path} holds epoch {self.epoch}"

    def sidecar_failed(self, exc: Any) -> str:
        """The message of a save whose ``.npz`` (epoch :attr:`epoch`) was
        written but whose ``.json`` copy was not: which file holds what."""
        if not Path(exc.sidecar).is_file():
            copy = "was not written"
        elif self.sidecar_epoch is not None:
            copy = f"still describes epoch {self.sidecar_epoch}"
        else:
            copy = "was not updated"
        return (
            f"cannot write {str(exc.sidecar)!r} ({exc.why}): {self.path} holds epoch "
            f"{self.epoch}, but its .json copy {copy} (the .npz is what xpnet "
            "reads; the copy is for people)"
        )


def check_save_best(
    args: argparse.Namespace, resume: str | None, target: SaveTarget
) -> None:
    """``--save-best``: a checkpoint path that is neither ``--save``'s nor
    the data's, and that is never replaced without --overwrite unless this
    run is resumed (the file is its own best epoch)."""
    if args.save_best is None:
        return
    path = Path(args.save_best)
    from ..checkpoint import checkpoint_name_problem

    problem = checkpoint_name_problem(path)
    if problem:
        raise UsageError(f"--save-best {str(path)!r}: a checkpoint path {problem}")
    if path.is_dir():
        raise UsageError(f"--save-best {str(path)!r} is a directory; give a file name")
    if target.path is not None and resolved(path) == resolved(target.path):
        raise UsageError(
            f"--save-best {str(path)!r} is --save's file, which holds the last "
            "epoch: give the best epoch another name"
        )
    dataset = getattr(args, "dataset", None)
    if dataset and resolved(path) in [resolved(p) for p in data_paths(dataset) or []]:
        raise UsageError(
            f"--save-best {str(path)!r} is the training data file: save the "
            "checkpoint under another name"
        )
    taken = path.exists() or path.with_name(path.name + ".json").exists()
    if taken and resume is None and not args.overwrite:
        raise UsageError(
            f"--save-best {str(path)!r} already exists: replace it with --overwrite, "
            "or choose another name"
        )


def resume_source(args: argparse.Namespace) -> str | None:
    """The checkpoint to resume from, after --resume/--resume-if-exists/--save."""
    if args.save is not None and not args.save.strip():
        raise UsageError("--save needs a file name, e.g. --save run.npz")
    if args.resume_if_exists:
        if args.overwrite:
            raise UsageError(
                "--resume-if-exists keeps --save's file and --overwrite replaces "
                "it: choose one"
            )
        if not args.save:
            raise UsageError(
                "--resume-if-exists needs --save PATH.npz (the checkpoint to continue)"
            )
        if args.resume:
            raise UsageError(
                "--resume-if-exists continues --save's file: drop --resume, or drop "
                "--resume-if-exists"
            )
        return args.save if Path(args.save).exists() else None
    if args.resume and not args.save:
        # Resuming keeps saving to the checkpoint it continues.
        args.save = args.resume
    return args.resume
