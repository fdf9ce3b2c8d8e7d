"""Checks of a model against its callbacks, a checkpoint and its data, run by the command line before the Trainer
writes its first file (see ``ProjectCLI.check_before_running``)."""

from __future__ import annotations

from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from project.data import ImageDataModule
from project.errors import UserInputError, some
from project.files.weights import state_dict_differences
from project.networks.lora import base_weights, restore_base
from project.training.averaging import AVERAGING_STATE, CURRENT_WEIGHTS, averaged_weights, averaging_method
from project.training.checkpoints import BestCheckpoint
from project.training.schedules import steps_before_fit
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
                f"{type(callback).__name__} monitors {monitor}, which a {model.task.name} task does not log; use "
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
    LoRA adapters, whose base is not this network's); the same for the weights being trained that a checkpoint of
    averaged weights keeps beside them (:data:`~project.training.averaging.CURRENT_WEIGHTS`), which a resumed fit
    loads into the network."""
    restore_base(checkpoint, model, path)
    target = model.state_dict()
    problems = _fit_problems(target, checkpoint["state_dict"])
    if CURRENT_WEIGHTS in checkpoint:
        current = checkpoint[CURRENT_WEIGHTS]
        if not isinstance(current, dict) or not all(isinstance(value, Tensor) for value in current.values()):
            problems.append(f"{CURRENT_WEIGHTS} is not a mapping of tensors")
        else:
            if model.hparams.lora:  # left out of it as of the state_dict; the averaging callback puts them back
                current = {**{name: tensor.detach() for name, tensor in base_weights(model).items()}, **current}
            problems += [f"{CURRENT_WEIGHTS}: {problem}" for problem in _fit_problems(target, current)]
        state = checkpoint.get(AVERAGING_STATE)
        count = state.get("n_averaged") if isinstance(state, dict) else None
        if not (isinstance(count, Tensor) and count.numel() == 1 and not count.is_floating_point() and count >= 0):
            problems.append(f"{AVERAGING_STATE}.n_averaged is not a count (got {count!r})")
    if problems:
        raise UserInputError(
            f"{path} does not fit this network: {some(problems, 8)}. Configure the network as the run "
            f"that wrote it was (its config.yaml)"
        )


def _fit_problems(target: dict[str, Tensor], source: dict[str, Tensor]) -> list[str]:
    """How the weights ``source`` fail to fit a module whose state dict is ``target``, one phrase each."""
    found = state_dict_differences(target, source)
    problems = [f"{name} missing" for name in found.missing]
    return problems + [f"{name} not in this network" for name in found.unexpected] + found.shapes + found.kinds


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


def set_up_data(data: ImageDataModule, trainer: Trainer, stage: str, model: TaskModule) -> None:
    """Every split, decoded and checked now: a broken test split stops the run before it trains. Only one process per
    machine downloads; the others set up once the files are there, or in ``Trainer.fit``. Once the training data is
    known, so is the run's length: ``fit`` checks that the model's schedule fits it (a warm-up of epochs or steps must
    end before the run does: :meth:`~project.training.task_module.TaskModule.check_run`)."""
    if trainer.local_rank == 0:
        data.prepare_data()
    if trainer.local_rank == 0 or data.files_ready():
        data.setup(stage)
        if stage == "fit" and not trainer.fast_dev_run:  # (whose one step tries the code, not the plan)
            model.check_run(steps_before_fit(trainer, data))
