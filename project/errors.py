"""Errors the command line reports as one message, without a traceback: the message says what went wrong and what
to do. Anything else is a bug, and keeps its traceback."""


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


class TrainingDivergedError(ReportedError):
    """The loss or the weights stopped being finite numbers; training stops before they reach a checkpoint."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (or its type's name): enough to say why, without a library's essay."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
