"""Image files decoded once: read, converted to the channels and size the network takes, kept as uint8 in memory
(up to a size), normalised when an example is read. Also the scan of an image folder, which follows links once.

Decoding every file when the data is set up names every file that cannot be decoded before training starts, and
makes later epochs decode nothing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import functional as TF

from project.data.digits import mnist_like
from project.data.in_memory import SplitTensors, TensorImages, normalised
from project.errors import UserInputError, first_line, some

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def per_channel(value: float | list[float] | tuple[float, ...], channels: int, name: str) -> tuple[float, ...]:
    """One number for every channel, or one per channel, as a tuple of ``channels`` numbers."""
    values = (value,) if isinstance(value, int | float) else tuple(value)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise UserInputError(f"data.{name} takes one finite number, or one per channel ({channels}), got {value}")
    return tuple(float(v) for v in values)


def per_channel_normalisation(
    mean: float | list[float] | tuple[float, ...], std: float | list[float] | tuple[float, ...], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``data.mean`` and ``data.std`` (one number, or one per channel) as ``channels`` numbers each; ``std`` > 0."""
    mean, std = per_channel(mean, channels, "mean"), per_channel(std, channels, "std")
    if not all(value > 0 for value in std):
        raise UserInputError(f"data.std must be positive, got {list(std)}")
    return mean, std


def check_mnist_style(channels: int) -> None:
    """The one rule for ``data.mnist_style`` (training) and ``--mnist-style`` (prediction): MNIST style makes greyscale
    digits, for networks of 1-channel images. (A checkpoint trained otherwise before the rule still predicts as it
    was trained: a checkpoint's own preprocessing is not checked against it.)"""
    if channels != 1:
        raise UserInputError(
            f"MNIST-style preprocessing makes greyscale digits, as MNIST's are: it is for images of 1 channel "
            f"(data.channels 1), and these have {channels}"
        )


@dataclass(frozen=True)
class ImageConversion:
    """From an image file to a ``channels`` x ``image_size`` x ``image_size`` tensor, normalised with mean and std
    (one number for all channels, or one per channel). With ``mnist_style`` the image's digit is first made to look
    like MNIST's (:func:`project.data.digits.mnist_like`)."""

    channels: int = 1
    image_size: int = 28
    mean: float | tuple[float, ...] = MNIST_MEAN
    std: float | tuple[float, ...] = MNIST_STD
    mnist_style: bool = False

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UserInputError(f"data.channels must be 1 (greyscale) or 3 (RGB), got {self.channels}")
        if self.image_size < 1:
            raise UserInputError(f"data.image_size must be a positive integer, got {self.image_size}")
        mean, std = per_channel_normalisation(self.mean, self.std, self.channels)
        object.__setattr__(self, "mean", mean)  # frozen: set once, here
        object.__setattr__(self, "std", std)

    def decode(self, path: Path) -> Tensor:
        """The file's pixels as uint8, converted and resized (bilinear, antialiased); :class:`UndecodableImage` names
        a file that cannot be decoded (whatever PIL raises: OSError, SyntaxError, ValueError, DecompressionBombError
        for a picture that declares more pixels than PIL's limit, ...)."""
        try:
            return self.converted(path)
        except Exception as error:
            raise UndecodableImage(path, first_line(error)) from None

    def converted(self, path: Path) -> Tensor:
        with Image.open(path) as image:
            image.load()  # decodes everything: verify() alone passes truncated or corrupt pixel data
            source = mnist_like(image) if self.mnist_style else image
            converted = source.convert("L" if self.channels == 1 else "RGB")
        resized = TF.resize(converted, [self.image_size, self.image_size], antialias=True)
        return TF.pil_to_tensor(resized)

    def normalise(self, pixels: Tensor) -> Tensor:
        """As every path normalises (:func:`~project.data.in_memory.normalised`)."""
        return normalised(pixels, torch.tensor(self.mean).view(-1, 1, 1), torch.tensor(self.std).view(-1, 1, 1))


class UndecodableImage(UserInputError):
    """An image file that cannot be decoded: the file, and why (the decoder's first line)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} ({reason})")
        self.path, self.reason = path, reason


class FileImages(TensorImages):
    """Images from files with their targets; each file decoded once here, every one that cannot be is named.

    ``targets`` is a tensor (class indices or regression values). The decoded pixels are kept when they fit in
    ``max_bytes``; otherwise each access decodes its file again.
    """

    def __init__(self, paths: list[Path], targets: Tensor, conversion: ImageConversion, max_bytes: int) -> None:
        self.paths = paths
        self.targets = targets
        self.conversion = conversion
        side = conversion.image_size
        keep = len(paths) * conversion.channels * side * side <= max_bytes
        decoded, broken = [], []
        for path in paths:
            try:
                pixels = conversion.decode(path)
            except UndecodableImage as error:
                broken.append(str(error))
                continue
            if keep:
                decoded.append(pixels)
        if broken:
            raise UserInputError(f"{len(broken)} images cannot be decoded: {some(broken)}")
        self.pixels = torch.stack(decoded) if keep and decoded else None

    def __len__(self) -> int:
        return len(self.paths)

    def tensors(self) -> SplitTensors | None:
        """The decoded images and targets (the in-memory path), or ``None`` when they were too big to keep."""
        return SplitTensors(self.pixels, self.targets) if self.pixels is not None else None

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        pixels = self.pixels[index] if self.pixels is not None else self.conversion.decode(self.paths[index])
        target = self.targets[index]
        return self.conversion.normalise(pixels), target.item() if target.ndim == 0 else target


def class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (links followed), leaving out hidden ones like .ipynb_checkpoints."""
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def image_files(folder: Path, root: Path, seen: set[Path]) -> list[Path]:
    """The image files under ``folder`` (inside the dataset folder ``root``), recursively and in sorted order.

    Links are followed once: a link to a folder inside ``root`` (or above it: a loop) is skipped, since its images
    are counted where they are; a file already in ``seen`` (the same file under another name) is not added again.
    """
    found: list[Path] = []
    pending = [folder]
    root = root.resolve()
    while pending:
        current = pending.pop()
        for entry in sorted(os.scandir(current), key=lambda entry: entry.name):
            path = Path(entry.path)
            real = path.resolve()
            if entry.is_dir():
                inside = real == root or root in real.parents or real in root.parents
                if not (entry.is_symlink() and inside) and real not in seen:
                    seen.add(real)
                    pending.append(path)
            elif entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS) and real not in seen:
                seen.add(real)
                found.append(path)
    return sorted(found)
