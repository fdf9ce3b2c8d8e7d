"""Exact resume: what a checkpoint must hold, beyond Lightning's own, for a resumed run to continue bit for bit.

Lightning's checkpoint holds the weights, the optimizer, the schedulers and the loop counters, but not the random
number generators, and a plain shuffling DataLoader starts a resumed epoch from its first batch again. Two pieces
close those gaps:

- :class:`ResumableSampler` shuffles each epoch with a permutation that depends only on its seed and the epoch, and
  asks the trainer, when an iteration starts, how many batches of that epoch were already trained on; it skips them.
- :class:`RNGState` (a callback) saves the python, numpy, torch CPU and CUDA generator states of every process in
  the checkpoint, and puts them back right before the first training step of the resumed run.

Every other source of randomness in a training step uses a generator of its own whose state is in the checkpoint
(the data module's augmentation generator), so nothing draws from the global generators between the moment a
checkpoint is written and the next training step.

What a resumed run may change is decided here too (:func:`check_resume_settings`): options that only say how fast
to learn or how long take effect; options that decide what is learned, or in what order, cannot change.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from project.errors import UserInputError

Position = tuple[int, int]
"""(epoch, number of this process's samples of that epoch already trained on)."""


class ResumableSampler(DistributedSampler):
    """A shuffling sampler that can start an epoch part-way through, on one process or many.

    The order of epoch ``e`` is the permutation seeded with ``seed + e`` (split across processes as
    :class:`DistributedSampler` splits it). ``position`` is asked at the start of each iteration for the epoch and
    the number of samples to skip; without it, the epoch comes from :meth:`set_epoch` and nothing is skipped.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        position: Callable[[], Position] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.position = position

    def __iter__(self) -> Iterator[int]:
        skip = 0
        if self.position is not None:
            epoch, skip = self.position()
            self.set_epoch(epoch)
        indices = list(super().__iter__())
        return iter(indices[skip:])


def trainer_position(trainer: L.Trainer, batch_size: int) -> Position:
    """Where the fit loop stands: its epoch, and the samples of it already trained on (non-zero only on resume)."""
    fit_loop = trainer.fit_loop
    epoch = fit_loop.epoch_progress.current.processed
    batches_done = fit_loop.epoch_loop.batch_progress.current.processed if fit_loop.restarting else 0
    return epoch, batches_done * batch_size


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
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


class RNGState(L.Callback):
    """Saves every process's random generator states in the checkpoint and restores them on resume.

    Set ``restore=False`` to save but not restore (the negative control of the exact-resume test).
    """

    def __init__(self, restore: bool = True) -> None:
        self.restore = restore
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # Called on every process when a checkpoint is written; rank 0 writes the file, so gather to it.
        trainer = self._trainer
        local = rng_state()
        if trainer is None or trainer.world_size == 1:
            return {"ranks": [local]}
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, local)
        return {"ranks": gathered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._to_restore is None:
            return
        states, self._to_restore = self._to_restore["ranks"], None
        if not self.restore:
            return
        if len(states) != trainer.world_size:
            raise RuntimeError(
                f"the checkpoint holds the random states of {len(states)} processes, this run has {trainer.world_size}"
            )
        set_rng_state(states[trainer.global_rank])

    _trainer: L.Trainer | None = None


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler`. Lightning asks loaders for ``state_dict`` to tell whether they
    can resume mid-epoch; the position itself comes from the trainer, so the state only records the shuffle seed,
    and a resumed run with another seed is refused (its order could not continue the old one)."""

    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_seed": self.sampler.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("shuffle_seed", self.sampler.seed) != self.sampler.seed:
            raise UserInputError(
                f"the checkpoint was trained with shuffle seed {state_dict['shuffle_seed']} and this run has "
                f"{self.sampler.seed}: resume with the same seed_everything (or data.shuffle_seed)"
            )


CHANGEABLE_ON_RESUME = {
    "model": {"lr", "backbone_lr", "pretrained"},
    "data": {"data_dir", "download", "num_workers", "eval_batch_size", "shuffle_seed"},
}
"""Options a resumed run may give new values: the learning rates (the learning-rate plan is rescaled from the
resumed step on), where and how the data is read, and ``pretrained`` (ignored: the weights come from the checkpoint).
The shuffle seed is compared as it takes effect (``data.shuffle_seed``, else ``seed_everything``).
Trainer options such as ``max_epochs`` and ``gradient_clip_val`` are not stored in the checkpoint and may change
too; a longer or shorter run re-plans its schedule. Every other model and data option is fixed."""


def plain(value: Any) -> Any:
    """Hyperparameters as plain dicts, lists and values (a network object as its class path and arguments)."""
    if hasattr(value, "as_dict"):  # jsonargparse's Namespace
        value = value.as_dict()
    if isinstance(value, nn.Module):
        cls = type(value)
        value = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(getattr(value, "config", {}))}
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def flat(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"network": {"init_args": {"width": 32}}}`` -> ``{"model.network.init_args.width": 32}``."""
    result: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if isinstance(value, Mapping):
            result.update(flat(value, f"{prefix}{key}."))
        else:
            result[f"{prefix}{key}"] = value
    return result


def check_resume_settings(
    checkpoint: Mapping[str, Any],
    model_hparams: Mapping[str, Any],
    data_hparams: Mapping[str, Any],
    data_class_path: str,
    shuffle_seed: int,
    stored_shuffle_seed: int | None,
    accumulate_grad_batches: int,
    world_size: int,
) -> None:
    """Refuse, naming each, the options of a resumed run that differ from the checkpoint's and cannot change."""
    differences = []
    sections = (
        ("model", checkpoint.get("hyper_parameters") or {}, model_hparams),
        ("data", checkpoint.get("datamodule_hyper_parameters") or {}, data_hparams),
    )
    for section, stored, current in sections:
        stored, current = flat(plain(stored), f"{section}."), flat(plain(current), f"{section}.")
        fixed = sorted(set(stored) & set(current))
        for key in fixed:
            if key.removeprefix(f"{section}.").split(".")[0] in CHANGEABLE_ON_RESUME[section]:
                continue
            if stored[key] != current[key]:
                differences.append(f"{key} {current[key]!r} (the run has {stored[key]!r})")
    stored_class = (checkpoint.get("datamodule_hyper_parameters") or {}).get("_class_path")
    if stored_class and stored_class != data_class_path:
        differences.append(f"data.class_path {data_class_path} (the run has {stored_class})")
    layout = checkpoint.get("run_layout", {})
    for name, value in (("accumulate_grad_batches", accumulate_grad_batches), ("world_size", world_size)):
        if name in layout and layout[name] != value:
            option = "trainer.devices x trainer.num_nodes" if name == "world_size" else f"trainer.{name}"
            differences.append(f"{option} {value} (the run has {layout[name]})")
    if stored_shuffle_seed is not None and stored_shuffle_seed != shuffle_seed:
        differences.append(
            f"the shuffle seed {shuffle_seed} (the run has {stored_shuffle_seed}: resume with --seed_everything "
            f"{stored_shuffle_seed}, or --data.shuffle_seed {stored_shuffle_seed})"
        )
    if differences:
        raise UserInputError(
            "these options cannot change on resume: " + "; ".join(differences) + ". They decide what is learned or "
            "in what order; resume with the values the run started with (its config.yaml), or start a new run. "
            "What may change: model.lr, model.backbone_lr, trainer options such as max_epochs, where the data is."
        )
