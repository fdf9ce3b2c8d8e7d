"""Errors the command line reports as one message, without a traceback: the message says what went wrong and what
to do. Anything else is a bug, and keeps its traceback."""

from __future__ import annotations

import errno
from collections.abc import Iterator


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
            else "lower the learning rate (--model.optimizer.lr) or clip gradients (--trainer.gradient_clip_val)"
        )
        if self.last_checkpoint:
            return (
                f"{self.what}. {self.last_checkpoint} holds the last finite state: {fix}, then resume from it "
                f"(--ckpt_path last; a --model.optimizer.lr given on resume takes effect)."
            )
        if self.last_checkpoint == "":
            return f"{self.what}. No checkpoint was written yet: {fix} and start again."
        return f"{self.what}. To go on, {fix} and start again, or resume from a checkpoint written before this step."


def first_line(error: BaseException) -> str:
    """The first line of an error's message (or its type's name): enough to say why, without a library's essay."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


EXTRAS = {
    "timm": "timm",
    "transformers": "hf",
    "peft": "peft",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "mlflow-skinny": "mlflow",
    "comet-ml": "comet",
    "comet_ml": "comet",
    "optuna": "sweep",
    "psycopg2": "sweep",
    "huggingface_hub": "hub",
    "huggingface-hub": "hub",
    "fastapi": "serve",
    "uvicorn": "serve",
    "starlette": "serve",
    "tokenizers": "text",
}
"""Packages that an extra in ``pyproject.toml`` installs (``pip install -e ".[wandb]"``), by their import or
distribution name."""


def install_command(package: str, version: str = "") -> str:
    """How to install ``package``: its extra of this project, else pip with the version asked for."""
    extra = EXTRAS.get(package.lower())
    return f'pip install -e ".[{extra}]"' if extra else f"pip install '{package}{version}'"


def some(items: list[str], shown: int = 5) -> str:
    """The first ``shown`` of ``items`` and how many more: an error about 20,000 files stays one readable line."""
    more = f"; and {len(items) - shown:,} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and what it was raised from or during, innermost last (libraries wrap the errors they meet)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def disk_full(error: BaseException) -> OSError | None:
    """The "no space left" (or over quota) error behind ``error``: torch.save reports a full disk as a RuntimeError
    ("unexpected pos") raised while handling the OSError."""
    return next((e for e in causes(error) if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)), None)
