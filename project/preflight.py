"""Checks of a model against its callbacks and a checkpoint, run by the command line before the Trainer writes its
first file (see ``ProjectCLI.check_before_running``)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from project.checkpoints import BestCheckpoint
from project.errors import UserInputError
from project.lora import restore_base
from project.task_module import TaskModule


def check_monitors(callbacks: list[Callback], model: TaskModule) -> None:
    """Refuse a checkpoint or early-stopping callback that watches a metric this task does not log."""
    logged = model.logged_metric_names()
    for callback in callbacks:
        if isinstance(callback, BestCheckpoint):
            callback.follow_task(model)
        monitor = getattr(callback, "monitor", None)
        if monitor is not None and monitor not in logged:
            raise UserInputError(
                f"{type(callback).__name__} monitors {monitor}, which a {model.hparams.task} task does not log; use "
                f"one of {', '.join(sorted(logged))} (project.checkpoints.BestCheckpoint without monitor follows "
                f"the task)"
            )


def check_fits_network(checkpoint: dict[str, Any], model: TaskModule, path: str) -> None:
    """Refuse a checkpoint whose weights do not fit the configured network, naming the tensors that differ (or, for
    LoRA adapters, whose base is not this network's)."""
    restore_base(checkpoint, model, path)
    stored, expected = checkpoint["state_dict"], model.state_dict()
    problems = [f"{name} missing" for name in sorted(set(expected) - set(stored))]
    problems += [f"{name} not in this network" for name in sorted(set(stored) - set(expected))]
    problems += [
        f"{name}: checkpoint {tuple(stored[name].shape)}, network {tuple(expected[name].shape)}"
        for name in sorted(set(stored) & set(expected))
        if tuple(stored[name].shape) != tuple(expected[name].shape)
    ]
    if problems:
        raise UserInputError(
            f"{path} does not fit this network: {'; '.join(problems[:8])}"
            f"{f' (and {len(problems) - 8} more)' if len(problems) > 8 else ''}. Configure the network as the run "
            f"that wrote it was (its config.yaml)"
        )


def check_sharding_has_gpus(strategy: Any, accelerator: Any) -> None:
    """FSDP shards a network across CUDA GPUs; Lightning refuses it elsewhere with a traceback or a misleading line."""
    name = strategy if isinstance(strategy, str) else getattr(strategy, "class_path", None) or type(strategy).__name__
    if "fsdp" not in name.lower():
        return
    import torch

    if str(accelerator) == "cpu" or not torch.cuda.is_available():
        where = "--trainer.accelerator cpu" if str(accelerator) == "cpu" else "this machine has no CUDA GPU"
        raise UserInputError(
            f"trainer.strategy {name.rsplit('.', 1)[-1]} shards the network across CUDA GPUs, and {where}: "
            f"use --config ddp.yaml (or no strategy) on the CPU"
        )
