"""Checkpoints: written atomically and never with non-finite values, read only when they are plainly data.

- :class:`AtomicCheckpointIO` writes through :func:`project.files.atomic.written_whole` (a temporary file in the same
  folder, flushed and renamed over the old one: the path holds the old checkpoint or the new one, never half of one;
  the umask's permissions; a full disk in one line). It refuses to write non-finite weights or optimizer state, and
  reads every checkpoint with :func:`read_checkpoint`.
- :func:`read_checkpoint` loads with ``torch.load(weights_only=True)`` (nothing in the file is unpickled into code)
  and checks it is a Lightning checkpoint; :func:`allowed_class` lets a checkpoint name a class only from an
  allow-list, without importing anything.
- :class:`LastCheckpoint` keeps ``last.ckpt`` fresh (every N steps, every epoch end, on SIGTERM and Ctrl-C) through
  the public ``trainer.save_checkpoint``; :class:`BestCheckpoint` keeps the best one by the metric of the model's task.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from project.errors import TrainingDivergedError, UserInputError, first_line, some
from project.files.atomic import TEMPORARY_SUFFIX, free_bytes, written_whole
from project.training.run_lock import first_process
from project.trusted import HOW_TO_TRUST, trust_declared

LAST_CHECKPOINT = "last.ckpt"
_TEMPORARY_PATTERN = f".*.ckpt.*{TEMPORARY_SUFFIX}"
"""Name pattern of the temporary files :class:`AtomicCheckpointIO` writes before renaming them."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves whole or not at all (:func:`~project.files.atomic.written_whole`); a failed save leaves the previous file
    and no temporary.

    Never writes a checkpoint whose weights or optimizer state are not finite, and reads checkpoints only with
    :func:`read_checkpoint` (``weights_only=True``, whatever the caller asks).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        _refuse_non_finite(checkpoint, path)
        with written_whole(path, "wb", full_message=lambda: _disk_full_message(checkpoint, path)) as file:
            torch.save(checkpoint, file)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(Path(path))


def _disk_full_message(checkpoint: dict[str, Any], path: Path) -> str:
    needed = sum(tensor.numel() * tensor.element_size() for tensor in _tensors_in(checkpoint))
    free = free_bytes(path.parent)
    kept = f"{path} is unchanged" if path.exists() else "no earlier checkpoint was there"
    return (
        f"No space left on device while writing a checkpoint into {path.parent.resolve()}: it needs about {needed:,} "
        f"bytes and {free:,} bytes are free ({kept}). Free some space, or write the run elsewhere "
        f"(--trainer.logger.init_args.save_dir), then resume with --ckpt_path last."
    )


def _tensors_in(value: Any) -> Iterator[Tensor]:
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors_in(item)


def _refuse_non_finite(checkpoint: dict[str, Any], path: Path) -> None:
    """Raise :class:`TrainingDivergedError` if a weight or an optimizer state tensor holds inf or nan."""
    step = checkpoint.get("global_step", "?")
    for name, tensor in checkpoint.get("state_dict", {}).items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingDivergedError(
                f"the weights became non-finite ({name}) by step {step}; {path} was not written"
            )
    for optimizer in checkpoint.get("optimizer_states", []):
        for index, state in optimizer.get("state", {}).items():
            for key, tensor in state.items():
                if isinstance(tensor, Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise TrainingDivergedError(
                        f"the optimizer state became non-finite ({key} of parameter {index}) by step {step}, though "
                        f"the weights are finite; {path} was not written"
                    )


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that a save killed part-way left in ``folder``; return what was removed."""
    stale = sorted(folder.glob(_TEMPORARY_PATTERN)) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint read with ``weights_only=True``; :class:`UserInputError` naming the file otherwise.

    Refuses files that are missing, truncated or corrupt, that are not checkpoints, and that carry pickled objects
    (which ``weights_only=True`` will not unpickle: they could run code).
    """
    if not Path(path).is_file():
        raise UserInputError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserInputError(
            f"{path} is not a readable checkpoint (truncated, corrupt, not a checkpoint, or it holds pickled objects "
            f"that torch.load(weights_only=True) refuses): {first_line(error)}"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "epoch", "global_step"} <= checkpoint.keys():
        raise UserInputError(f"{path} is not a Lightning checkpoint (no state_dict, epoch and global_step)")
    return checkpoint


def import_path(cls: type) -> str:
    """The shortest path ``cls`` is imported by: its package's where the package re-exports it
    (``project.networks.ConvNet``, ``torch.optim.AdamW``), so that what a checkpoint records outlives a file's move."""
    parts = cls.__module__.split(".")
    for end in range(1, len(parts)):
        package = ".".join(parts[:end])
        if getattr(sys.modules.get(package), cls.__qualname__, None) is cls:
            return f"{package}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def named_class(class_path: str) -> object:
    """What ``class_path`` names among the modules already imported (``None``: nothing); nothing is imported."""
    module, _, name = class_path.rpartition(".")
    return getattr(sys.modules.get(module), name, None)


def names_class(class_path: str, cls: type) -> bool:
    """Whether ``class_path`` is ``cls``'s import path, or one an already imported module re-exports it under."""
    return class_path == import_path(cls) or named_class(class_path) is cls


def allowed_class(class_path: object, base: type, what: str, holder: str = "the checkpoint") -> type:
    """The subclass of ``base`` that ``class_path`` names, among those already imported: the allow-list.

    ``class_path`` is the class's own import path or one its (already imported) package re-exports it under, such as
    ``torch.optim.AdamW`` for ``torch.optim.adamw.AdamW``. Nothing the file names is imported here, so a file cannot
    make Python import (and run) a module of its choosing; the modules the user trusts are imported first
    (:mod:`project.trusted`: the ``[tool.project] trusted`` list of ``pyproject.toml``). ``holder`` names the file in
    the refusal (a model folder's ``config.json``, ...).
    """
    trust_declared()
    allowed: dict[str, type] = {}
    pending = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        allowed[import_path(cls)] = cls
        pending += cls.__subclasses__()
    if isinstance(class_path, str) and class_path not in allowed:
        alias = next((cls for cls in allowed.values() if names_class(class_path, cls)), None)
        if alias is not None:
            return alias
    if not isinstance(class_path, str) or class_path not in allowed:
        raise UserInputError(
            f"{holder} names the {what} {class_path}, which is not allowed here: use one of the imported "
            f"subclasses of {base.__name__} ({some(sorted(allowed), 8).replace('; ', ', ')}); {HOW_TO_TRUST}"
        )
    return allowed[class_path]


class LastCheckpoint(Checkpoint):
    """``last.ckpt``, the newest state: every ``every_n_train_steps`` optimizer steps, at the end of every epoch
    (after its validation) and when the job is asked to stop (SIGTERM, or SIGUSR1 from SLURM).

    A ``Checkpoint`` callback, so Lightning runs it after the others (in list order among checkpoints): at an epoch's
    end, ``last.ckpt`` records the best checkpoint of that epoch too.

    ``--ckpt_path last`` resumes from it. (ModelCheckpoint's own ``save_last`` refreshes ``last.ckpt`` only when the
    monitored metric improves, and its step and epoch triggers exclude each other.)
    """

    def __init__(self, every_n_train_steps: int = 200, dirpath: str | None = None) -> None:
        if every_n_train_steps < 0:
            raise UserInputError(
                f"LastCheckpoint.every_n_train_steps must be 0 (off) or more, got {every_n_train_steps}"
            )
        self.every_n_train_steps = every_n_train_steps
        self.dirpath = dirpath
        self.folder: Path | None = None
        self.saved_step: int | None = None
        self.previous_sigusr1: Any = None
        self.previous_sigint: Any = None
        self.ctrl_c_at: float | None = None
        """When Ctrl-C asked this run to stop (``time.monotonic``), if it did."""

    @property
    def path(self) -> Path | None:
        return self.folder / LAST_CHECKPOINT if self.folder is not None else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder = self.dirpath or str(Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints")
        self.folder = Path(trainer.strategy.broadcast(folder))  # the version folder is chosen on rank 0

    def state_dict(self) -> dict[str, Any]:
        # Where this run keeps its checkpoints: a checkpoint saved elsewhere (Lightning's hpc_ckpt_<N>.ckpt) is
        # resumed into this run's folder (project.training.runs.run_version).
        return {"dirpath": str(self.folder)} if self.folder is not None else {}

    def save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step in (0, self.saved_step):
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # everything: weights, optimizer, loops
        self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # SLURM warns a job with SIGUSR1 before its time limit (#SBATCH --signal=SIGUSR1@90). Unless Lightning's
        # SLURM auto-requeue already handles it, pass it on as SIGTERM: save at the next step boundary and stop.
        self.previous_sigusr1 = None
        if (
            signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)
            and threading.current_thread() is threading.main_thread()
        ):
            self.previous_sigusr1 = signal.signal(signal.SIGUSR1, _forward_as_sigterm)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Ctrl-C too, unless a handler of someone else's is there: Python's KeyboardInterrupt strikes mid-step, and
        # Lightning then exits without a checkpoint. (Set once Lightning has recorded the handlers it gives back.)
        self.previous_sigint = self.ctrl_c_at = None
        if (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
            and threading.current_thread() is threading.main_thread()
        ):
            self.previous_sigint = signal.signal(signal.SIGINT, self.on_ctrl_c)

    def on_ctrl_c(self, signum: int, frame: object) -> None:
        """The first Ctrl-C stops the run as SIGTERM does: at the next step boundary, saving ``last.ckpt``. Another
        one stops it at once, without saving (one within a second of the first is the same key press, which a sweep's
        workers also get from their parent)."""
        now = time.monotonic()
        if self.ctrl_c_at is None:
            self.ctrl_c_at = now
            if first_process():
                print("\nCtrl-C: stopping after this step to save last.ckpt (again: stop at once, unsaved)", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
        elif now - self.ctrl_c_at > 1.0:
            raise KeyboardInterrupt

    def restore_signals(self) -> None:
        """Give SIGUSR1 and SIGINT back the handlers they had before fit."""
        for signum, previous in ((signal.SIGUSR1, self.previous_sigusr1), (signal.SIGINT, self.previous_sigint)):
            if previous is not None:
                signal.signal(signum, previous)
        self.previous_sigusr1 = self.previous_sigint = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore_signals()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore_signals()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning turns SIGTERM into SIGTERMException at a step boundary: a consistent state worth saving.
        # Other exceptions can strike mid-step, so the last regular save stands.
        if isinstance(exception, SIGTERMException):
            self.save(trainer)
            if self.saved_step is not None and self.path is not None:
                where = (
                    f"{self.path} holds the state of step {self.saved_step}; resume with the same command and "
                    f"--ckpt_path last"
                )
            else:
                where = "no checkpoint of this run was written (the first comes after a training step); start it again"
            if trainer.is_global_zero:
                by = "Ctrl-C" if self.ctrl_c_at is not None else "SIGTERM"
                print(f"Stopped by {by} at step {trainer.global_step}: {where}", flush=True)
        self.restore_signals()
        if isinstance(exception, TrainingDivergedError) and exception.last_checkpoint is None:
            exception.last_checkpoint = str(self.path) if self.path is not None and self.path.is_file() else ""


def stopped_by_ctrl_c(callbacks: list[L.Callback]) -> bool:
    """Whether Ctrl-C stopped the fit that ran these callbacks (:meth:`LastCheckpoint.on_ctrl_c`)."""
    return any(isinstance(c, LastCheckpoint) and c.ctrl_c_at is not None for c in callbacks)


def _forward_as_sigterm(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class MonitoredModule(L.LightningModule):
    """A LightningModule that names the validation metric picking its best checkpoint, which :class:`BestCheckpoint`
    follows (:class:`~project.training.TaskModule` names its task's)."""

    @property
    def monitored_metric(self) -> tuple[str, Literal["min", "max"]]:
        """The metric's name and whether lower or higher is better."""
        return "val/loss", "min"


class BestCheckpoint(ModelCheckpoint):
    """The best checkpoint by a validation metric: by default the one the model's task names (``val/acc`` to
    maximise for classification, ``val/loss`` to minimise for regression), so the data decides, not a preset.

    Args:
        monitor, mode: a metric and direction of your own instead of the task's.
        **kwargs: see Lightning's ``ModelCheckpoint``.
    """

    def __init__(
        self,
        monitor: str | None = None,
        mode: Literal["min", "max"] | None = None,
        save_top_k: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(monitor=monitor or "val/loss", mode=mode or "min", save_top_k=save_top_k, **kwargs)
        self.follows_task = monitor is None

    def follow_task(self, pl_module: L.LightningModule) -> None:
        """Monitor the model's own metric (``pl_module.monitored_metric``: name and direction) unless told another."""
        if self.follows_task and isinstance(pl_module, MonitoredModule):
            self.monitor, self.mode = pl_module.monitored_metric
            self.kth_value = torch.tensor(torch.inf if self.mode == "min" else -torch.inf)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.follow_task(pl_module)
        super().setup(trainer, pl_module, stage)
