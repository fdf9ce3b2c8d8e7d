"""Exact resume: what a checkpoint must hold, beyond Lightning's own, for a resumed run to continue bit for bit,
and what a resumed run may change.

Lightning's checkpoint holds the weights, the optimizer, the schedulers and the loop counters, but not the random
number generators, and a plain shuffling DataLoader starts a resumed epoch from its first batch again. The data
module closes the second gap itself: its ``state_dict`` records where the training order stands, and on resume its
sampler (:class:`~project.data.sampler.ResumableSampler`, a permutation of its seed and the epoch) skips the batches
already trained on. :class:`ExactResume` (a callback, public hooks only) closes the first: it saves the python,
numpy, torch CPU and CUDA generator states of every process in the checkpoint, and puts them back right before the
first training step of the resumed run.

Every other source of randomness in a training step uses a generator of its own whose state is in the checkpoint
(the data module's augmentation generator), so nothing draws from the global generators between the moment a
checkpoint is written and the next training step.

:func:`check_resume_settings` decides what a resumed run may change: options that only say how fast to learn or
how long take effect; options that decide what is learned, or in what order, cannot change.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from project.data.sampler import shuffle_seed_difference
from project.errors import UserInputError
from project.plain import plain
from project.training.checkpoints import import_path, named_class, names_class
from project.training.specs import plain_spec


def _rng_state() -> dict[str, Any]:
    """The generator states of this process, as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gauss": cached_gauss,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants the nested tuples that ``getstate`` gave; a checkpoint may hand back lists."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, list | tuple) else value


def gather_to_every_rank(trainer: L.Trainer, value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]``: rank 0 writes the checkpoint, so it needs every rank's value."""
    if trainer.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


class ExactResume(L.Callback):
    """Saves the random generator states of every process in the checkpoint, and puts them back before the first
    resumed training step: what exact resume needs beyond Lightning's checkpoint and the data module's state (where
    the training order stands, :meth:`project.data.ImageDataModule.state_dict`).

    ``restore_random_state=False`` saves but does not restore: the negative control of the exact-resume test.
    """

    def __init__(self, restore_random_state: bool = True) -> None:
        self.restore_random_state = restore_random_state
        self.trainer: L.Trainer | None = None
        self.random_states: list[Any] | None = None
        self.resumed_at_epoch_end = False
        """Whether the checkpoint being resumed was written once its epoch's training had finished."""
        self.max_steps_held: int | None = None
        """``max_steps``, held back from Lightning's loop while it restores its state (:meth:`on_fit_start`)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        done = [progress.get(key) for key in ("ready", "started", "processed")]
        self.resumed_at_epoch_end = done[0] is not None and done.count(done[0]) == 3

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning restores its loop from a checkpoint after this hook. With max_steps set, it takes every resume for
        # a restart inside the last epoch, even one whose training had finished ("iteration-based training"), and
        # then runs that epoch again with no batch in it: one epoch fewer, and the data order of the next (Lightning
        # #19617). Without max_steps during the restore, such a checkpoint resumes at the next epoch, as it should.
        if trainer.ckpt_path and self.resumed_at_epoch_end and trainer.max_steps != -1:
            self.max_steps_held, trainer.fit_loop.epoch_loop.max_steps = trainer.max_steps, -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.max_steps_held is not None:  # the loop is restored: the run stops at max_steps again
            trainer.fit_loop.epoch_loop.max_steps, self.max_steps_held = self.max_steps_held, None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        states, self.random_states = self.random_states, None
        if states is None or not self.restore_random_state:
            return
        if len(states) != trainer.world_size:
            raise UserInputError(
                f"the checkpoint holds the random states of {len(states)} processes, this run has {trainer.world_size}"
            )
        _set_rng_state(states[trainer.global_rank])

    def state_dict(self) -> dict[str, Any]:
        # Called on every process when a checkpoint is written; rank 0 writes the file, so gather to it.
        local = _rng_state()
        return {"ranks": gather_to_every_rank(self.trainer, local) if self.trainer is not None else [local]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.random_states = state_dict["ranks"]


def check_saved_states(checkpoint: Mapping[str, Any], source: str, data_class: type) -> None:
    """Refuse, in one line naming ``source``, a checkpoint whose states that a resumed run puts back are not what a
    run saves: :class:`ExactResume`'s (every process's python, numpy, torch and CUDA generator states), and the data
    module's augmentation generator and training position. Each generator state is put into a generator of its
    own kind here, which refuses one of another shape or type as it would mid-run."""
    callbacks = checkpoint.get("callbacks")
    exact = callbacks.get(ExactResume.__qualname__) if isinstance(callbacks, dict) else None
    data_state = checkpoint.get(data_class.__qualname__)
    problem = None
    if exact is not None:
        problem = _exact_resume_problem(exact)
    if problem is None and isinstance(data_state, dict) and "augment_generator" in data_state:
        problem = _generator_problem("augment_generator", data_state["augment_generator"])
    if problem is None and isinstance(data_state, dict) and data_state.get("position") is not None:
        problem = _position_problem(data_state["position"])
    if problem is not None:
        raise UserInputError(f"{source}: {problem}; not a state a run saves (resume from another checkpoint)")


def _exact_resume_problem(state: Any) -> str | None:
    """What is wrong with :class:`ExactResume`'s saved state, or ``None``."""
    ranks = state.get("ranks") if isinstance(state, dict) else None
    if not isinstance(ranks, list) or not ranks or not all(isinstance(rank, dict) for rank in ranks):
        return "ExactResume's ranks are not a list of random states, one per process"
    for index, rank in enumerate(ranks):
        try:
            random.Random().setstate(_as_tuples(rank["python"]))
            numpy = rank["numpy"]
            keys = numpy["keys"].numpy().astype(np.uint32)
            state_tuple = (numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gauss"])
            np.random.RandomState().set_state(state_tuple)
        except Exception as error:  # random's and numpy's own checks of a state (TypeError, ValueError, KeyError...)
            return f"ExactResume's random state of process {index} is not one ({type(error).__name__}: {error})"
        problem = _generator_problem(f"ExactResume's torch state of process {index}", rank.get("torch"))
        cuda = rank.get("cuda")
        if problem is None and cuda is not None and not (isinstance(cuda, torch.Tensor) and cuda.dtype == torch.uint8):
            problem = f"ExactResume's CUDA state of process {index} is not a tensor of bytes"
        if problem is not None:
            return problem
    return None


def _position_problem(position: Any) -> str | None:
    """What is wrong with the training position a data module saved (its epoch, the batches of it trained, whether
    that was all of them), or ``None``."""
    counts = [position.get("epoch"), position.get("batches")] if isinstance(position, dict) else []
    if len(counts) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return f"the data module's position is {position!r}, not an epoch and a count of batches"
    if not isinstance(position.get("epoch_complete"), bool):
        return f"the data module's position has epoch_complete {position.get('epoch_complete')!r}, not true or false"
    return None


def _generator_problem(what: str, state: Any) -> str | None:
    """What is wrong with a torch CPU generator's saved ``state`` (``Generator.get_state()``), or ``None``."""
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
        return f"{what} is {type(state).__name__}, not a generator state (a tensor of bytes)"
    try:
        torch.Generator().set_state(state)
    except RuntimeError as error:  # torch's own check: the size of a CPU generator's state
        return f"{what} is not a generator state ({str(error).splitlines()[0]})"
    return None


def metric_state(metric: Metric) -> dict[str, Any]:
    """The accumulated state of a torchmetrics metric (or collection), as plain tensors (or lists of them: metrics
    such as average precision keep every prediction)."""
    metric.persistent(True)
    state = {key: _detached(value) for key, value in metric.state_dict().items()}
    metric.persistent(False)
    return state


def _detached(value: Any) -> Any:
    return [_detached(item) for item in value] if isinstance(value, list) else value.detach().cpu()


def load_metric_state(metric: Metric, state: dict[str, Any]) -> None:
    metric.persistent(True)
    metric.load_state_dict(state)
    metric.persistent(False)


_CHANGEABLE_ON_RESUME = (
    "model.optimizer.init_args.lr",
    "model.finetuning.backbone_lr",
    "model.finetuning.pretrained",
    "model.network.init_args.weights",
    "data.data_dir",
    "data.allow_paths_outside",
    "data.download",
    "data.loading.num_workers",
    "data.loading.eval_batch_size",
    "data.decoded",
    "data.stream",
    "data.split.shuffle_seed",
    "data.tokenizer",
)
"""Options a resumed run may give new values: the learning rates (the learning-rate plan is rescaled from the
resumed step on), where and how the data is read, and ``pretrained`` and a library network's ``weights`` (ignored: the
weights come from the checkpoint).
Where the decoded images are kept (``data.decoded``: the cache, its folder, ``max_memory_mb``) and whether they are
read from chunks of them (``data.stream``: the chunks hold the same pixels, checked against the files) change nothing
of the batches; nor does where a text's tokenizer is read from (``data.tokenizer``: the command line checks that it is
the run's, by its fingerprint). The shuffle seed is compared as it takes effect
(``data.split.shuffle_seed``, else ``seed_everything``).
Trainer options such as ``max_epochs`` and ``gradient_clip_val`` are not stored in the checkpoint and may change
too; a longer or shorter run re-plans its schedule. Every other model and data option is fixed."""


def _plain_hparams(value: Any) -> Any:
    """Hyperparameters as plain values, a network object as its class path and arguments (as a checkpoint has it)."""
    return plain(value, lambda item: plain_spec(item) if isinstance(item, nn.Module) else item)


_WHOLE_VALUES = ("data.labels.label_sets", "model.task.init_args.metrics")
"""Options compared as a whole, in order: their keys are the user's own names (a renamed label is another label,
and the order of the labels is the order of the network's outputs; an extra metric added is one more state that a run
resumed mid-epoch would lack)."""
_LINKED = {
    "model.network.init_args.num_outputs": "the data's number of outputs",
    "model.task.class_path": "the data's targets, unless model.task names it",
}
"""Options the data decides (the network's outputs: ``ProjectCLI.add_arguments_to_parser`` links them; the task:
``TaskModule.use_data``): named with what decides them."""


def flat(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"network": {"init_args": {"width": 32}}}`` -> ``{"model.network.init_args.width": 32}``; the options in
    :data:`_WHOLE_VALUES` stay whole (as a list of their items)."""
    result: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if f"{prefix}{key}" in _WHOLE_VALUES:
            result[f"{prefix}{key}"] = list(value.items()) if isinstance(value, Mapping) else value
        elif isinstance(value, Mapping):
            result.update(flat(value, f"{prefix}{key}."))
        else:
            result[f"{prefix}{key}"] = value
    return result


def _same_class(key: str, stored: Any, current: Any) -> bool:
    """Whether two class paths of an option name one class: ``project.networks.ConvNet`` and its module's path."""
    if not key.endswith("class_path") or not isinstance(stored, str) or not isinstance(current, str):
        return False
    return named_class(current) is not None and named_class(stored) is named_class(current)


def shown(value: Any) -> str:
    """A value as the user wrote it: a whole mapping as ``{name: [...], ...}``, not the list of its items."""
    if isinstance(value, list) and value and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        value = dict(value)
    return repr(value)


def _given_or_dropped(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Options set on one side and ``None`` on the other (a ``model.lr_scheduler`` or ``model.lora`` given or left
    out): their flat keys differ, so the key-by-key comparison does not meet them."""
    differences = []
    for one, other, now_none in ((current, stored, True), (stored, current, False)):
        for key in sorted(name for name, value in one.items() if value is None):
            parts = {name[len(key) + 1 :]: value for name, value in other.items() if name.startswith(f"{key}.")}
            if parts and not key.startswith(_CHANGEABLE_ON_RESUME):
                now, had = (None, parts) if now_none else (parts, None)
                differences.append(f"{key} {shown(now)} (the run has {shown(had)})")
    return differences


def check_resume_settings(
    checkpoint: Mapping[str, Any],
    model_hparams: Mapping[str, Any],
    data_hparams: Mapping[str, Any],
    data_class: type,
    shuffle_seed: int,
    stored_shuffle_seed: int | None,
    accumulate_grad_batches: int,
    world_size: int,
) -> None:
    """Refuse, naming each, the options of a resumed run that differ from the checkpoint's and cannot change."""
    differences = []
    sections = (  # the data first: it decides the number of outputs
        ("data", checkpoint.get("datamodule_hyper_parameters") or {}, data_hparams),
        ("model", checkpoint.get("hyper_parameters") or {}, model_hparams),
    )
    for section, stored, current in sections:
        stored, current = flat(_plain_hparams(stored), f"{section}."), flat(_plain_hparams(current), f"{section}.")
        fixed = sorted(set(stored) & set(current))
        for key in fixed:
            if key.startswith(_CHANGEABLE_ON_RESUME):
                continue
            if stored[key] != current[key] and not _same_class(key, stored[key], current[key]):
                decided = f"; set by {_LINKED[key]}" if key in _LINKED else ""
                differences.append(f"{key} {shown(current[key])} (the run has {shown(stored[key])}{decided})")
        differences += _given_or_dropped(stored, current)
    stored_data = checkpoint.get("datamodule_hyper_parameters") or {}
    stored_class = stored_data.get("_class_path")
    if stored_class and not names_class(stored_class, data_class):
        differences.append(f"data.class_path {import_path(data_class)} (the run has {stored_class})")
    elif untaken := sorted(key for key in stored_data if not key.startswith("_") and key not in data_hparams):
        differences.append(
            f"the run's data options {', '.join(untaken)}, which this version of {data_class.__name__} does not take "
            "(its arguments changed since the run was written)"
        )
    layout = checkpoint.get("run_layout", {})
    for name, value in (("accumulate_grad_batches", accumulate_grad_batches), ("world_size", world_size)):
        if name in layout and layout[name] != value:
            option = "trainer.devices x trainer.num_nodes" if name == "world_size" else f"trainer.{name}"
            differences.append(f"{option} {value} (the run has {layout[name]})")
    if (seed := shuffle_seed_difference(stored_shuffle_seed, shuffle_seed)) is not None:
        differences.append(seed)
    if differences:
        raise UserInputError(
            "these options cannot change on resume: " + "; ".join(differences) + ". They decide what is learned or "
            "in what order; resume with the values the run started with (its config.yaml), or start a new run. "
            "What may change: model.optimizer.lr, model.finetuning.backbone_lr, trainer options such as max_epochs, "
            "where the data is."
        )
