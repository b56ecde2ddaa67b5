"""The exceptions the command line turns into one line, and the check for the training install.

A user's mistake (UserError) is printed as a single line with exit status 2; a run that diverged
(TrainingDiverged) or was interrupted (Interrupted) as a single line with status 1 or 130.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib

TRAIN_EXTRA = 'pip install "fastnst[train]"'


class UserError(Exception):
    """A mistake the user can fix: a bad path, a bad file, an option out of range. Its message is one
    line: the line breaks of a message that quotes another error (a library's, a thread's) become spaces."""

    def __init__(self, message: str):
        super().__init__(" ".join(line.strip() for line in str(message).splitlines() if line.strip()))


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Interrupted(RuntimeError):
    """Ctrl-C or SIGTERM arrived; a checkpoint was written."""


def require_training_install(what: str, modules: tuple[str, ...] = ("torch",)) -> None:
    """Raise a one-line UserError naming the extra to install when `what` needs packages that
    only `fastnst[train]` installs (the light install stylizes with ONNX models only)."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"{what} needs the training install ({', '.join(missing)} not installed): {TRAIN_EXTRA}")
