"""From an image file to the uint8 pixels the network's input is made of: read, converted to the channels and size
the network takes (:class:`ImageConversion`), normalised when an example is read; every file that cannot be decoded
named (:class:`UndecodableImage`). Also the scan of an image folder, which follows links once.

What happens to the decoded pixels (held in memory, cached on disk, or decoded again on access) is
:mod:`project.data.file_images`'s.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import functional as TF

from project.data.digits import mnist_like
from project.data.in_memory import normalised
from project.errors import UserInputError, first_line, some

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DECODER_VERSION = 2
"""Goes up when this module decodes a file to other pixels than before: a decoded-image cache keyed with another
version is rebuilt (2: torchvision's decoder for PNG and JPEG files that need no conversion)."""


def _per_channel(value: float | list[float] | tuple[float, ...], channels: int, name: str) -> tuple[float, ...]:
    """One number for every channel, or one per channel, as a tuple of ``channels`` numbers."""
    values = (value,) if isinstance(value, int | float) else tuple(value)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise UserInputError(f"data.{name} takes one finite number, or one per channel ({channels}), got {value}")
    return tuple(float(v) for v in values)


def check_image_size(image_size: int) -> None:
    """Refuse an ``image_size`` (the side of the square images the network takes) below 1."""
    if image_size < 1:
        raise UserInputError(f"data.image_size must be a positive integer, got {image_size}")


def check_square(height: int, width: int, where: str) -> None:
    """Refuse images that are not square (the networks take ``image_size`` x ``image_size``)."""
    if height != width:
        raise UserInputError(f"{where}: images of {height}x{width} pixels; they must be square")


def per_channel_normalisation(
    mean: float | list[float] | tuple[float, ...], std: float | list[float] | tuple[float, ...], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``data.mean`` and ``data.std`` (one number, or one per channel) as ``channels`` numbers each; ``std`` > 0."""
    mean, std = _per_channel(mean, channels, "mean"), _per_channel(std, channels, "std")
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
        check_image_size(self.image_size)
        mean, std = per_channel_normalisation(self.mean, self.std, self.channels)
        object.__setattr__(self, "mean", mean)  # frozen: set once, here
        object.__setattr__(self, "std", std)

    def decode(self, path: Path | bytes) -> Tensor:
        """The file's pixels as uint8, converted and resized (bilinear, antialiased); :class:`UndecodableImage` names
        a file that cannot be decoded (whatever PIL raises: OSError, SyntaxError, ValueError, DecompressionBombError
        for a picture that declares more pixels than PIL's limit, ...). ``path`` may be a file's bytes (an upload to
        the prediction server), decoded exactly as the file would be."""
        try:
            return self.converted(path)
        except Exception as error:
            raise UndecodableImage(path if isinstance(path, Path) else Path("the image"), first_line(error)) from None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, image_size, image_size)``: what every decoded image is."""
        return self.channels, self.image_size, self.image_size

    @property
    def description(self) -> str:
        """What changes the decoded pixels, as text (a cache's name and key hold it); not the normalisation, which is
        applied after."""
        return f"{self.channels}x{self.image_size}x{self.image_size} mnist_style={self.mnist_style}"

    def converted(self, path: Path | bytes) -> Tensor:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:  # reads the header only
            if not self.mnist_style and (image.format, image.mode, image.size) in self.direct_formats():
                direct = decoded_directly(path)
                if direct is not None and direct.dtype == torch.uint8 and tuple(direct.shape) == self.shape:
                    return direct
            image.load()  # decodes everything: verify() alone passes truncated or corrupt pixel data
            source = mnist_like(image) if self.mnist_style else image
            converted = source.convert("L" if self.channels == 1 else "RGB")
        resized = TF.resize(converted, [self.image_size, self.image_size], antialias=True)
        return TF.pil_to_tensor(resized)

    def direct_formats(self) -> set[tuple[str, str, tuple[int, int]]]:
        """PNG and JPEG files already in the mode and size asked for: torchvision's decoder gives their pixels as
        PIL does (tested), and faster (``scripts/benchmark_data.py``), with nothing to convert or resize."""
        mode, size = "L" if self.channels == 1 else "RGB", (self.image_size, self.image_size)
        return {("PNG", mode, size), ("JPEG", mode, size)}

    def normalise(self, pixels: Tensor) -> Tensor:
        """As every path normalises (:func:`~project.data.in_memory.normalised`)."""
        return normalised(pixels, torch.tensor(self.mean).view(-1, 1, 1), torch.tensor(self.std).view(-1, 1, 1))


def decoded_directly(path: Path | bytes) -> Tensor | None:
    """The file's pixels (or those of a file's bytes) through torchvision's decoder (libpng, libjpeg-turbo), as
    stored; ``None`` when it refuses them (PIL then decodes the file, and names it if it cannot)."""
    try:
        data = torch.frombuffer(bytearray(path), dtype=torch.uint8) if isinstance(path, bytes) else read_file(str(path))
        return decode_image(data, mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError):
        return None


class UndecodableImage(UserInputError):
    """An image file that cannot be decoded: the file, and why (the decoder's first line)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} ({reason})")
        self.path, self.reason = path, reason


class UndecodableImages(UserInputError):
    """The image files of a split that cannot be decoded (or found), all named at once."""


def undecodable(broken: list[str]) -> UndecodableImages:
    """The one message for a split's files that cannot be decoded: how many, and the first few (``path (why)``)."""
    return UndecodableImages(f"{len(broken)} images cannot be decoded: {some(broken)}")


def class_folders(root: Path, skip: Path | None = None) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (links followed), leaving out hidden ones like .ipynb_checkpoints
    and ``skip`` (the decoded-image cache's folder, when it was put among the classes)."""
    if not root.is_dir():
        return []
    skipped = skip.resolve() if skip is not None else None
    return sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".") and Path(entry.path).resolve() != skipped
    )


def image_files(folder: Path, root: Path, seen: set[Path]) -> list[Path]:
    """The image files under ``folder`` (inside the dataset folder ``root``), recursively and in sorted order.

    Links are followed once: a link to a folder inside ``root`` (or above it: a loop) is skipped, since its images
    are counted where they are; a file already in ``seen`` (the same file under another name) is not added again.
    """
    found: list[Path] = []
    pending = [(folder, folder.resolve())]
    root = root.resolve()
    while pending:
        current, current_real = pending.pop()
        for entry in sorted(os.scandir(current), key=lambda entry: entry.name):
            path = Path(entry.path)
            # only a link needs resolving: anything else is where its folder really is (a scan of 200,000 files
            # took 6 s resolving each, 1 s like this; scripts/benchmark_data.py)
            real = path.resolve() if entry.is_symlink() else current_real / entry.name
            if entry.is_dir():
                inside = real == root or root in real.parents or real in root.parents
                if not (entry.is_symlink() and inside) and real not in seen:
                    seen.add(real)
                    pending.append((path, real))
            elif entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS) and real not in seen:
                seen.add(real)
                found.append(path)
    return sorted(found, key=lambda path: path.parts)  # the order of Path's own comparison, without its cost
