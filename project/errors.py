"""Errors the command line reports as one message, without a traceback: the message says what went wrong and what
to do. Anything else is a bug, and keeps its traceback."""

from __future__ import annotations


class ReportedError(Exception):
    """An error whose message is the whole story; the command line exits with :attr:`exit_code`."""

    exit_code = 1


class UserInputError(ReportedError, ValueError):
    """Bad input (an argument, a file, the environment): refused before any work starts, naming what is allowed."""

    exit_code = 2


class DataNotFoundError(UserInputError):
    """The dataset files are missing and could not be downloaded."""


class CheckpointNotFoundError(UserInputError):
    """A checkpoint asked for by ``--ckpt_path`` does not exist or cannot be read."""


class DiskFullError(ReportedError):
    """A checkpoint could not be written for lack of space; the previous one is untouched."""


class TrainingDivergedError(ReportedError):
    """The loss, the weights or the optimizer state stopped being finite numbers; training stops before they reach a
    checkpoint.

    Whoever knows where the newest checkpoint is (the last-checkpoint callback) fills in :attr:`last_checkpoint`:
    the file that still holds the last finite state, or ``""`` when none was written yet.
    """

    def __init__(self, what: str, data_problem: bool = False) -> None:
        super().__init__(what)
        self.what = what
        self.data_problem = data_problem
        self.last_checkpoint: str | None = None

    def __str__(self) -> str:
        fix = (
            "fix the data"
            if self.data_problem
            else "lower model.lr or add gradient clipping (--trainer.gradient_clip_val)"
        )
        if self.last_checkpoint:
            return (
                f"{self.what}. {self.last_checkpoint} holds the last finite state: {fix}, then resume from it "
                f"(--ckpt_path last; a model.lr given on resume takes effect)."
            )
        if self.last_checkpoint == "":
            return f"{self.what}. No checkpoint was written yet: {fix} and start again."
        return f"{self.what}. To go on, {fix} and start again, or resume from a checkpoint written before this step."


def first_line(error: BaseException) -> str:
    """The first line of an error's message (or its type's name): enough to say why, without a library's essay."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
