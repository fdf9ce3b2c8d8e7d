"""Augmentation of training batches, on the device they are on: torchvision ``transforms.v2`` transforms named in the
config (``data.augment``), each image with its own random parameters, then MixUp or CutMix on the whole batch
(``data.mixup_alpha``, ``data.cutmix_alpha``); and the older ``data.augment_shift`` (random shifts).

Both data paths (in memory and DataLoader) hand the data module normalised batches, and the module augments them in
one place (:meth:`project.data.ImageDataModule.on_after_batch_transfer`): the normalisation is undone, so that the
transforms see float images on the 0..1 scale that ``transforms.v2`` takes for colour operations, then done again.

Randomness: torchvision draws its parameters from torch's global generators, which the training loop owns (dropout,
and :class:`project.training.resume.ExactResume` restores them on resume). So each batch is augmented under
``torch.random.fork_rng`` with a seed of its own, drawn from the data module's ``augment_generator`` (saved in the
checkpoint) and mixed with the process's rank: the loop's generators are untouched, a resumed run draws the seeds
the uninterrupted one drew, and two DDP processes do not augment alike.

Classes named in a config are code: only the public classes of ``torchvision.transforms.v2``, and subclasses of its
``Transform`` from modules the user trusted (:mod:`project.trusted`), already imported, are built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from project.errors import UserInputError
from project.trusted import HOW_TO_TRUST, trust_declared

V2 = "torchvision.transforms.v2"
NOT_FOR_AUGMENT = {
    "MixUp": "use data.mixup_alpha, which mixes whole batches",
    "CutMix": "use data.cutmix_alpha, which mixes whole batches",
    **dict.fromkeys(
        (
            "ToPILImage",
            "ToTensor",
            "PILToTensor",
            "ToImage",
            "ToDtype",
            "ConvertImageDtype",
            "ToPureTensor",
            "Normalize",
        ),
        "the data module converts and normalises the images itself",
    ),
}
"""Classes of ``transforms.v2`` that are not per-image augmentations of a training image, with what to do instead."""
SEED_RANKS = 2**16
"""A batch's seed is ``draw * SEED_RANKS + rank``: distinct for every draw and every rank below this."""


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image by a whole number of pixels in [-max_shift, max_shift] along each axis (edges repeated)."""
    count, _, height, width = images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (count, 2), generator=generator).to(images)
    theta = torch.zeros(count, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * shifts[:, 0] / width
    theta[:, 1, 2] = -2 * shifts[:, 1] / height
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="border", align_corners=False)


def transform_classes() -> dict[str, type]:
    """The classes ``data.augment`` may name, by every name it may use: ``RandomHorizontalFlip`` and
    ``torchvision.transforms.v2.RandomHorizontalFlip`` for torchvision's own, ``module.Class`` for an already imported
    subclass of ``v2.Transform`` from elsewhere (a module the user trusted, imported here first)."""
    trust_declared()
    allowed: dict[str, type] = {}
    pending = list(v2.Transform.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if not cls.__module__.startswith("torchvision."):
            allowed[f"{cls.__module__}.{cls.__qualname__}"] = cls
    for name, value in vars(v2).items():
        if isinstance(value, type) and issubclass(value, v2.Transform) and not name.startswith("_"):
            allowed[name] = allowed[f"{V2}.{name}"] = value
    return allowed


NESTING = ("Compose", "RandomApply", "RandomChoice", "RandomOrder")
"""Transforms whose ``transforms`` argument is a list of transforms, given in the config as entries of their own."""


def built_transform(spec: Any, where: str, allowed: dict[str, type]) -> v2.Transform:
    """One entry of ``data.augment`` built: a class name, or ``{class_path: ..., init_args: {...}}``."""
    spec = {"class_path": spec} if isinstance(spec, str) else spec
    keys = set(spec) if isinstance(spec, dict) else set()
    if "class_path" not in keys or not isinstance(spec["class_path"], str) or keys - {"class_path", "init_args"}:
        raise UserInputError(f"{where} is {spec!r}: give a class name or {{class_path: ..., init_args: {{...}}}}")
    class_path, init_args = spec["class_path"], spec.get("init_args") or {}
    name = class_path.removeprefix(f"{V2}.")
    if name in NOT_FOR_AUGMENT:
        raise UserInputError(f"{where}: {class_path} is not for data.augment: {NOT_FOR_AUGMENT[name]}")
    if class_path not in allowed:
        raise UserInputError(
            f"{where}: {class_path} is not allowed here: use a class of {V2} (RandomResizedCrop, RandomHorizontalFlip, "
            f"RandomRotation, RandAugment, TrivialAugmentWide, RandomErasing, ...); {HOW_TO_TRUST}"
        )
    if not isinstance(init_args, dict):
        raise UserInputError(f"{where}.init_args must be a mapping of argument names to values, got {init_args!r}")
    if name in NESTING and isinstance(init_args.get("transforms"), list):  # transforms of transforms, each checked
        given = init_args["transforms"]
        inner = [built_transform(one, f"{where}.transforms[{i}]", allowed) for i, one in enumerate(given)]
        init_args = {**init_args, "transforms": inner}
    try:
        return allowed[class_path](**init_args)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{where}: {class_path}({init_args}) cannot be built: {error}") from None


def check_alpha(name: str, alpha: float) -> None:
    if not isinstance(alpha, int | float) or not alpha >= 0:
        raise UserInputError(f"data.{name} must be 0 (off) or a positive number (Beta(alpha, alpha)), got {alpha!r}")


class BatchAugmentation:
    """``data.augment``'s transforms, each image its own draw, then MixUp or CutMix on the whole batch.

    ``specs`` are checked and built here, before any work. MixUp and CutMix need the number of classes, known once
    the data is set up: they are built by :meth:`mix_with`. With both alphas positive, each batch takes one of the
    two, with even odds (timm's default switch).
    """

    def __init__(self, specs: list[Any] | None, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        if specs is not None and not isinstance(specs, list | tuple):
            raise UserInputError(f"data.augment must be a list of transforms, got {specs!r}")
        check_alpha("mixup_alpha", mixup_alpha)
        check_alpha("cutmix_alpha", cutmix_alpha)
        allowed = transform_classes() if specs else {}
        self.transforms = [built_transform(spec, f"data.augment[{i}]", allowed) for i, spec in enumerate(specs or [])]
        self.per_image = v2.Compose(self.transforms) if self.transforms else None
        self.alphas = {"mixup_alpha": float(mixup_alpha), "cutmix_alpha": float(cutmix_alpha)}
        self.mix: v2.Transform | None = None

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (MixUp or CutMix), so that the targets become class probabilities."""
        return any(self.alphas.values())

    @property
    def active(self) -> bool:
        return self.per_image is not None or self.mixes

    def mix_with(self, task: str, num_classes: int) -> None:
        """Build MixUp / CutMix for ``num_classes`` classes; refused unless the task is multiclass (the mixed targets
        are class probabilities, which only its cross-entropy takes). Nothing to build when neither alpha is set."""
        if not self.mixes:
            return
        if task != "multiclass":
            given = ", ".join(f"data.{name} {alpha:g}" for name, alpha in self.alphas.items() if alpha)
            raise UserInputError(
                f"{given}: MixUp and CutMix mix class labels, for multiclass tasks only (this is {task})"
            )
        mixers = [
            kind(alpha=alpha, num_classes=num_classes)
            for kind, alpha in ((v2.MixUp, self.alphas["mixup_alpha"]), (v2.CutMix, self.alphas["cutmix_alpha"]))
            if alpha
        ]
        self.mix = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    def check_shape(self, shape: tuple[int, int, int]) -> None:
        """Refuse transforms that change the size of a ``(C, H, W)`` image (the network takes one size): tried once on a
        blank image, under a generator of its own."""
        if self.per_image is None:
            return
        with seeded(0, torch.device("cpu")):
            out = tuple(self.per_image(torch.zeros(shape)).shape)
        if out != tuple(shape):
            raise UserInputError(
                f"data.augment turns images of shape {tuple(shape)} (channels, height, width) into {out}: the network "
                f"takes one size, so give a transform that sets a size the images' own ({shape[1]})"
            )

    def __call__(self, images: Tensor, targets: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """``images`` (N, C, H, W, floats on the 0..1 scale) augmented one by one, then the batch mixed (targets then
        become (N, classes) probabilities); all random draws seeded with ``seed``, the global generators untouched."""
        with seeded(seed, images.device):
            if self.per_image is not None:
                images = torch.stack([self.per_image(image) for image in images])
            if self.mix is not None:
                images, targets = self.mix(images, targets)
        return images, targets


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's CPU generator (and ``device``'s, for CUDA) seeded with ``seed``, restored after:
    torchvision draws from the global generators (its transforms take no generator argument)."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def batch_seed(generator: torch.Generator, rank: int) -> int:
    """The next batch's seed: one draw from the data module's generator (saved in checkpoints), mixed with the rank."""
    draw = int(torch.randint(0, 2**46, (), generator=generator))
    return draw * SEED_RANKS + rank % SEED_RANKS
