"""Checks of a model against its callbacks and a checkpoint, run by the command line before the Trainer writes its
first file (see ``ProjectCLI.check_before_running``)."""

from __future__ import annotations

from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities import rank_zero_info

from project.errors import UserInputError, some
from project.files.weights import state_dict_differences
from project.networks.lora import restore_base
from project.training.averaging import averaged_weights, averaging_method
from project.training.checkpoints import BestCheckpoint
from project.training.stopping import TaskEarlyStopping
from project.training.task_module import TaskModule


def check_monitors(callbacks: list[Callback], model: TaskModule) -> None:
    """Refuse a checkpoint or early-stopping callback that watches a metric this task does not log."""
    logged = model.logged_metric_names()
    for callback in callbacks:
        if isinstance(callback, BestCheckpoint | TaskEarlyStopping):
            callback.follow_task(model)
        monitor = callback.monitor if isinstance(callback, ModelCheckpoint | EarlyStopping) else None
        if monitor is not None and monitor not in logged:
            raise UserInputError(
                f"{type(callback).__name__} monitors {monitor}, which a {model.hparams.task} task does not log; use "
                f"one of {', '.join(sorted(logged))} (project.training.BestCheckpoint without monitor follows the task)"
            )


def check_averaging(callbacks: list[Callback], checkpoint: dict[str, Any] | None, path: str) -> None:
    """Refuse weight averaging that would save or resume the wrong weights: two averages at once, checkpoints of
    weights only (Lightning saves the average only in full checkpoints), or a resumed run that drops or changes the
    averaging of the run it resumes (its ``state_dict`` is the average; the weights it trains are elsewhere)."""
    averaging = [callback for callback in callbacks if isinstance(callback, WeightAveraging)]
    methods = [averaging_method(callback) for callback in averaging]
    if len(averaging) > 1:
        raise UserInputError(f"more than one weight averaging callback ({', '.join(methods)}): keep one")
    if averaging and any(isinstance(c, ModelCheckpoint) and c.save_weights_only for c in callbacks):
        raise UserInputError(
            f"{methods[0]} with a ModelCheckpoint of save_weights_only=True: such checkpoints would hold the trained "
            "weights, not the average (Lightning saves the average in full checkpoints only); drop save_weights_only"
        )
    stored = averaged_weights(checkpoint) if checkpoint is not None else None
    if stored is None:
        return  # a new run, or a checkpoint of plain weights (an average, if configured, starts from them)
    if not averaging:
        raise UserInputError(
            f"{path} holds averaged weights ({stored['method']}): resume it with the same averaging (--config "
            f"{stored['method']}, as its config.yaml has it), or start a new run"
        )
    if methods[0] != stored["method"]:
        raise UserInputError(
            f"{path} holds averaged weights by {stored['method']}, and this run averages by {methods[0]}: resume with "
            f"{stored['method']}, or start a new run"
        )


def check_fits_network(checkpoint: dict[str, Any], model: TaskModule, path: str) -> None:
    """Refuse a checkpoint whose weights do not fit the configured network, naming the tensors that differ (or, for
    LoRA adapters, whose base is not this network's)."""
    restore_base(checkpoint, model, path)
    found = state_dict_differences(model.state_dict(), checkpoint["state_dict"])
    problems = [f"{name} missing" for name in found.missing]
    problems += [f"{name} not in this network" for name in found.unexpected] + found.shapes + found.kinds
    if problems:
        raise UserInputError(
            f"{path} does not fit this network: {some(problems, 8)}. Configure the network as the run "
            f"that wrote it was (its config.yaml)"
        )


def check_sharding_has_gpus(strategy: Any, accelerator: Any) -> None:
    """FSDP shards a network across CUDA GPUs; Lightning refuses it elsewhere with a traceback or a misleading line."""
    if isinstance(strategy, str):
        name = strategy
    else:  # a class_path mapping from a config (jsonargparse's Namespace), or a strategy object built in Python
        name = strategy.class_path if isinstance(strategy, Namespace) else type(strategy).__name__
    if "fsdp" not in name.lower():
        return
    import torch

    if str(accelerator) == "cpu" or not torch.cuda.is_available():
        where = "--trainer.accelerator cpu" if str(accelerator) == "cpu" else "this machine has no CUDA GPU"
        raise UserInputError(
            f"trainer.strategy {name.rsplit('.', 1)[-1]} shards the network across CUDA GPUs, and {where}: "
            f"use --config ddp.yaml (or no strategy) on the CPU"
        )


def adopt_backbone_normalisation(network: Any, data: Any) -> None:
    """Data whose ``mean`` / ``std`` are null take the normalisation the backbone's library states for its weights."""
    stated = network.normalisation
    if not data.awaiting_normalisation:
        return
    if stated is None:
        data.normalisation()  # refuses, saying what to set
    data.adopt_normalisation(stated["mean"], stated["std"])
    mean, std = data.normalisation()
    size = stated["image_size"]
    rank_zero_info(
        f"Images normalised with mean {[round(v, 4) for v in mean]} and std {[round(v, 4) for v in std]}: "
        f"{stated['source']} (it was trained on {size}x{size} images)"
    )
