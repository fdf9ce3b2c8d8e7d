"""Augmentation of training batches, on the device they are on (``data.augment``: :class:`Augmentation`): random
shifts (``shift``), then torchvision ``transforms.v2`` transforms named in the config (``transforms``), each image
with its own random parameters, then MixUp or CutMix on the whole batch (``mixup_alpha``, ``cutmix_alpha``). The
common transforms run as their batch versions (:mod:`project.data.batch_transforms`: the whole batch at once, on its
device, each image its own draw from v2's distributions); the others run on each image on its own, said once on the
console when the data is set up.

Every data path (in memory, from the cache, a DataLoader) hands the data module batches of pixels, and the module
augments them in one place (:meth:`project.data.ImageDataModule.on_after_batch_transfer`), on the 0..1 scale that
``transforms.v2`` takes for colour operations, before it normalises them, once.

Randomness: torchvision (and the batch versions) draw their parameters from torch's global generators, which the
training loop owns (dropout, and :class:`project.training.resume.ExactResume` restores them on resume). So each batch
is augmented under ``torch.random.fork_rng`` with a seed of its own, drawn from the augmentation's generator (in the
data module's ``state_dict``, saved in the checkpoint) and mixed with the process's rank: the loop's generators are
untouched, a resumed run draws the seeds the uninterrupted one drew, and two DDP processes do not augment alike.

Classes named in a config are code: only the public classes of ``torchvision.transforms.v2``, and subclasses of its
``Transform`` from modules the user trusted (:mod:`project.trusted`), already imported, are built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchvision.transforms import v2

from project.data.batch_transforms import batch_version
from project.errors import UserInputError, first_line
from project.plain import PlainData
from project.trusted import HOW_TO_TRUST, trust_declared

_V2 = "torchvision.transforms.v2"
_NOT_FOR_AUGMENT = {
    "MixUp": "use data.augment.mixup_alpha, which mixes whole batches",
    "CutMix": "use data.augment.cutmix_alpha, which mixes whole batches",
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
    "JPEG": "it compresses uint8 images, and data.augment.transforms see float images on the 0..1 scale",
    "Lambda": "its function would be code, which a config never holds: write a v2.Transform subclass in a module "
    "you trust",
    **dict.fromkeys(
        (
            "RandomIoUCrop",
            "SanitizeBoundingBoxes",
            "ClampBoundingBoxes",
            "ConvertBoundingBoxFormat",
            "SetClampingMode",
            "ClampKeyPoints",
            "SanitizeKeyPoints",
        ),
        "it acts on bounding boxes or key points, and these training images come with class labels only",
    ),
    "UniformTemporalSubsample": "it is for videos (frames in time), and these are still images",
}
"""Classes of ``transforms.v2`` that are not per-image augmentations of a training image (float pixels on the 0..1
scale, a class label), with why or what to do instead."""
_SEED_RANKS = 2**16
"""A batch's seed is ``draw * _SEED_RANKS + rank``: distinct for every draw and every rank below this."""


def _random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
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
    """The classes ``data.augment.transforms`` may name, by every name it may use: ``RandomHorizontalFlip`` and
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
            allowed[name] = allowed[f"{_V2}.{name}"] = value
    return allowed


_NESTING = ("Compose", "RandomApply", "RandomChoice", "RandomOrder")
"""Transforms whose ``transforms`` argument is a list of transforms, given in the config as entries of their own."""


def _built_transform(spec: Any, where: str, allowed: dict[str, type]) -> v2.Transform:
    """One entry of ``data.augment.transforms`` built: a class name, or ``{class_path: ..., init_args: {...}}``."""
    spec = {"class_path": spec} if isinstance(spec, str) else spec
    keys = set(spec) if isinstance(spec, dict) else set()
    if "class_path" not in keys or not isinstance(spec["class_path"], str) or keys - {"class_path", "init_args"}:
        raise UserInputError(f"{where} is {spec!r}: give a class name or {{class_path: ..., init_args: {{...}}}}")
    class_path, init_args = spec["class_path"], spec.get("init_args") or {}
    name = class_path.removeprefix(f"{_V2}.")
    if name in _NOT_FOR_AUGMENT:
        raise UserInputError(f"{where}: {class_path} is not for data.augment.transforms: {_NOT_FOR_AUGMENT[name]}")
    if class_path not in allowed:
        raise UserInputError(
            f"{where}: {class_path} is not allowed here: use a class of {_V2} (RandomResizedCrop, "
            "RandomHorizontalFlip, RandomRotation, RandAugment, TrivialAugmentWide, RandomErasing, ...); "
            f"{HOW_TO_TRUST}"
        )
    if not isinstance(init_args, dict):
        raise UserInputError(f"{where}.init_args must be a mapping of argument names to values, got {init_args!r}")
    if name in _NESTING and "transforms" in init_args:  # transforms of transforms, each checked
        given = init_args["transforms"]
        if not isinstance(given, list):  # (a string is a sequence too: Compose would take its letters)
            raise UserInputError(
                f"{where}: {class_path}'s transforms must be a list of transforms (class names or {{class_path: ..., "
                f"init_args: {{...}}}}), got {given!r}"
            )
        inner = [_built_transform(one, f"{where}.transforms[{i}]", allowed) for i, one in enumerate(given)]
        init_args = {**init_args, "transforms": inner}
    try:
        return allowed[class_path](**init_args)
    except Exception as error:  # a class's own check of its arguments, whatever it raises (a trusted module's too)
        raise UserInputError(
            f"{where}: {class_path}({init_args}) cannot be built: {type(error).__name__}: {first_line(error)}"
        ) from None


_WHERE = "data.augment.transforms"
"""How errors name the list of transforms."""


@dataclass(frozen=True)
class Augmentation:
    """How training batches are augmented: ``--data.augment.shift 2`` (a piece of every data module's arguments,
    checked, and its transforms built once to be checked, when it is built). Validation, test and predict batches are
    never augmented.

    Args:
        transforms: torchvision ``transforms.v2`` transforms for training images, in order, each image its own random
            draw (whole batches at once where :mod:`project.data.batch_transforms` has a batch version): a class name
            or ``{class_path: ..., init_args: {...}}`` each, such as ``[{class_path: RandomResizedCrop, init_args:
            {size: 28, scale: [0.8, 1.0]}}, RandomErasing]``. They see float images on the 0..1 scale, before
            normalisation.
        shift: random shifts of up to this many pixels along each axis, edges repeated (0: off), before
            ``transforms``.
        mixup_alpha: MixUp training batches, each with a share drawn from Beta(alpha, alpha) (0: off; 0.2 is usual);
            the targets become class probabilities (multiclass tasks only).
        cutmix_alpha: CutMix training batches likewise (0: off; 1.0 is usual); with both, each batch takes one of the
            two at even odds.
    """

    transforms: list[str | dict[str, PlainData]] | None = None
    shift: int = 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.transforms is not None and not isinstance(self.transforms, list | tuple):
            raise UserInputError(f"{_WHERE} must be a list of transforms, got {self.transforms!r}")
        if not isinstance(self.shift, int) or self.shift < 0:
            raise UserInputError(f"data.augment.shift must be 0 or more pixels, got {self.shift!r}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            alpha = getattr(self, name)
            if not isinstance(alpha, int | float) or not alpha >= 0:
                raise UserInputError(
                    f"data.augment.{name} must be 0 (off) or a positive number (Beta(alpha, alpha)), got {alpha!r}"
                )
        self.built()  # each entry checked now, before any work

    def built(self) -> list[v2.Transform]:
        """The transforms, built (and checked: :func:`_built_transform`)."""
        allowed = transform_classes() if self.transforms else {}
        return [_built_transform(spec, f"{_WHERE}[{i}]", allowed) for i, spec in enumerate(self.transforms or [])]


class BatchAugmentation:
    """The augmentation of :class:`Augmentation` at work: its transforms built, MixUp or CutMix once the classes are
    known (:meth:`mix_with`; with both alphas positive, each batch takes one of the two at even odds, timm's default
    switch), and the generator its random draws come from, seeded with ``seed`` (its state is the data module's, in
    checkpoints)."""

    def __init__(self, options: Augmentation, seed: int) -> None:
        self.shift = options.shift
        self.transforms = options.built()
        self.steps = _steps(self.transforms)
        self.per_image = v2.Compose(self.transforms) if self.transforms else None
        self.told = False
        self.alphas = {"mixup_alpha": float(options.mixup_alpha), "cutmix_alpha": float(options.cutmix_alpha)}
        self.mix: v2.Transform | None = None
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (MixUp or CutMix), so that the targets become class probabilities."""
        return any(self.alphas.values())

    @property
    def active(self) -> bool:
        """Whether training batches are changed at all."""
        return bool(self.shift) or self.per_image is not None or self.mixes

    def mix_with(self, task: str, num_classes: int) -> None:
        """Build MixUp / CutMix for ``num_classes`` classes; refused unless the task is multiclass (the mixed targets
        are class probabilities, which only its cross-entropy takes). Nothing to build when neither alpha is set."""
        if not self.mixes:
            return
        if task != "multiclass":
            given = ", ".join(f"data.augment.{name} {alpha:g}" for name, alpha in self.alphas.items() if alpha)
            raise UserInputError(
                f"{given}: MixUp and CutMix mix class labels, for multiclass tasks only (this is {task})"
            )
        mixers = [
            kind(alpha=alpha, num_classes=num_classes)
            for kind, alpha in ((v2.MixUp, self.alphas["mixup_alpha"]), (v2.CutMix, self.alphas["cutmix_alpha"]))
            if alpha
        ]
        self.mix = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    def try_on(self, shape: tuple[int, int, int]) -> None:
        """Try the transforms once, when the data is set up, on a few random images of ``shape`` ``(C, H, W)``: float
        pixels on the 0..1 scale, as :meth:`__call__` takes them, under a generator of their own. Refused in one line,
        naming the entry: a transform that fails on them, gives back something other than an image, or would be
        meaningless on them (:func:`_unfit_for`); and a list that changes the images' size (the network takes one).
        Then the batch versions run once on them too, and the transforms without one are named on the console."""
        if self.per_image is None:
            return
        for index, transform in enumerate(self.transforms):
            for inner in nested(transform):
                if (why := _unfit_for(inner, shape)) is not None:
                    raise UserInputError(f"{_WHERE}[{index}]: {type(inner).__name__} {why}")
        sample = torch.rand(_TRIAL_IMAGES, *shape, generator=torch.Generator().manual_seed(0))
        with seeded(0, torch.device("cpu")):
            for image in sample:
                for index, transform in enumerate(self.transforms):
                    image = tried(transform, image, f"{_WHERE}[{index}]", shape)
                if tuple(image.shape) != tuple(shape):
                    raise UserInputError(
                        f"{_WHERE} turn images of shape {tuple(shape)} (channels, height, width) into "
                        f"{tuple(image.shape)}: the network takes one size, so give a transform that sets a size the "
                        f"images' own ({shape[1]})"
                    )
        with seeded(0, torch.device("cpu")):
            self.transformed(sample)  # the batch versions too
        self.tell_per_image()

    def tell_per_image(self) -> None:
        """Say once, on the console, which transforms run on each image on its own (no batch version), and so slower:
        when the data is set up (:meth:`try_on`), or else at the first batch."""
        slow = [type(step).__name__ for batched, step in self.steps if not batched for step in step.transforms]
        if slow and not self.told:
            rank_zero_info(
                f"note: {_WHERE}: {', '.join(slow)} run on each image on its own (no batch version, or options it "
                "does not take): slower than the others (docs/augmentation.md)"
            )
        self.told = True

    def __call__(self, units: Tensor, targets: Tensor, rank: int) -> tuple[Tensor, Tensor]:
        """A training batch augmented: ``units`` (N, C, H, W, float pixels on the 0..1 scale) shifted, then through
        :meth:`seeded`, with draws from :attr:`generator` (mixed with the process's ``rank``): the shifts first, and
        with the same draws as before the transforms existed."""
        if self.shift:
            units = _random_shift(units, self.shift, self.generator)
        if not self.told:
            self.tell_per_image()
        if self.per_image is not None or self.mix is not None:
            units, targets = self.seeded(units, targets, batch_seed(self.generator, rank))
        return units, targets

    def transformed(self, units: Tensor) -> Tensor:
        """``units`` through the transforms: each step with a batch version on the whole batch, the others on each
        image on its own (:func:`_steps`); random draws from the global generators (seeded by the caller)."""
        for batched, step in self.steps:
            units = step(units) if batched else torch.stack([step(image) for image in units])
        return units

    def seeded(self, units: Tensor, targets: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """``units`` through the transforms, then the batch mixed (targets then become (N, classes) probabilities);
        all random draws seeded with ``seed``, the global generators untouched. A transform with a batch version
        (:mod:`project.data.batch_transforms`) takes the whole batch at once, each image its own draw; the others
        take the images one by one."""
        with seeded(seed, units.device):
            units = self.transformed(units)
            if self.mix is not None:
                units, targets = self.mix(units, targets)
        return units, targets


def _steps(transforms: list[v2.Transform]) -> list[tuple[bool, Any]]:
    """The transforms as steps in order: ``(True, a batch version)``, or ``(False, a v2.Compose)`` of consecutive
    transforms without one, which run on each image on its own."""
    steps: list[tuple[bool, Any]] = []
    for transform in transforms:
        batched = batch_version(transform)
        if batched is not None:
            steps.append((True, batched))
        elif steps and not steps[-1][0]:
            steps[-1][1].transforms.append(transform)
        else:
            steps.append((False, v2.Compose([transform])))
    return steps


_TRIAL_IMAGES = 4
"""How many random images :meth:`BatchAugmentation.try_on` passes through the transforms (a random draw may take a
path the first image does not, such as a crop that falls outside)."""


def nested(transform: v2.Transform) -> Iterator[v2.Transform]:
    """``transform`` and the transforms inside it (``Compose``, ``RandomApply``, ``RandomChoice``, ``RandomOrder``)."""
    yield transform
    if isinstance(transform, v2.Compose | v2.RandomApply | v2.RandomChoice | v2.RandomOrder):
        for inner in transform.transforms:
            yield from nested(inner)


def _unfit_for(transform: v2.Transform, shape: tuple[int, int, int]) -> str | None:
    """Why ``transform`` would run on images of ``shape`` and mean nothing there, or ``None``. A Gaussian blur whose
    kernel is larger than the image: every pixel's kernel reaches past the image's edges, into the mirror image that
    torchvision pads it with (``F.gaussian_blur`` pads by reflection, and fails once the padding is the image's size
    or more); the kernel size was meant for larger images. (The colour operations that torchvision defines on float
    images, such as ``RandomPosterize``, ``RandomSolarize`` with a threshold on the 0..1 scale, ``RandomEqualize`` and
    ``RandomAutocontrast``, are meaningful on them; ``JPEG``, which is not, is refused by name:
    ``_NOT_FOR_AUGMENT``.)"""
    if isinstance(transform, v2.GaussianBlur) and max(transform.kernel_size) > min(shape[1:]):
        return (
            f"has a kernel of {list(transform.kernel_size)} pixels, larger than the images ({shape[1]}x{shape[2]}): "
            f"it would blur them with their own mirror image; give an odd kernel_size of at most {min(shape[1:])}"
        )
    return None


def tried(transform: v2.Transform, image: Tensor, where: str, shape: tuple[int, int, int]) -> Tensor:
    """``transform`` applied to one ``image`` by :meth:`BatchAugmentation.try_on`; refused, naming it, when it fails or
    gives back something other than a float image."""
    name = type(transform).__name__
    try:
        out = transform(image)
    except Exception as error:  # whatever a transform raises on images it cannot take (torchvision's, a trusted one's)
        raise UserInputError(
            f"{where}: {name} cannot apply to these training images ({shape} (channels, height, width), float pixels "
            f"on the 0..1 scale): {type(error).__name__}: {first_line(error)}"
        ) from None
    if not isinstance(out, Tensor) or not out.is_floating_point():
        given = f"a {out.dtype} tensor" if isinstance(out, Tensor) else f"a {type(out).__name__}"
        raise UserInputError(f"{where}: {name} gives back {given}, not an image of float pixels: it cannot go here")
    return out


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
    return draw * _SEED_RANKS + rank % _SEED_RANKS
