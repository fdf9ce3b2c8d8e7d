"""Errors caused by what the user gave us (arguments, files, environment), as opposed to bugs.

The command line prints these as one message and exits with status 2, without a traceback: the message itself
must say what was wrong and what is allowed.
"""


class UserInputError(ValueError):
    """Bad input or a missing resource, reported to the user as a plain message."""


class DataNotFoundError(UserInputError):
    """The dataset files are missing and could not be downloaded."""


class CheckpointNotFoundError(UserInputError):
    """A checkpoint asked for by ``--ckpt_path`` does not exist."""
