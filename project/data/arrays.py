"""A user's own data as arrays: ``.npy`` files or one ``.npz`` (:class:`ArrayDataModule`), or numpy arrays and torch
tensors built in Python (:class:`TensorDataModule`).

Images are ``(N, H, W)`` (greyscale), ``(N, C, H, W)`` or ``(N, H, W, C)`` with 1 or 3 channels, square; uint8
(0..255, scaled by 1/255 as image files are) or floating point (taken as they are: scale them to [0, 1] for
``python -m project predict`` to prepare new image files as they were). Labels are integers 0 .. num_classes - 1, one
per image: a multiclass task (or binary and multilabel ones through ``data.labels``).

Everything is checked when the module is built, before any training: a bad file or array is one error naming it
and what is allowed. Files are data, never code: they are read with ``numpy.load(allow_pickle=False)``, so an array
of Python objects (a pickle) is refused, not unpickled. The splits are held as tensors: the in-memory path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from project.data.base import ImageDataModule
from project.data.decoding import check_square, per_channel_normalisation
from project.data.in_memory import PixelTensors, SplitTensors, unit_scaled
from project.data.labels import check_class_count
from project.data.splits import subset_labels
from project.errors import DataNotFoundError, UserInputError, first_line

_ArrayLike = np.ndarray | Tensor
_NPZ_KEYS = (("train_images", "train_labels", "test_images", "test_labels"), ("x_train", "y_train", "x_test", "y_test"))
"""The names an ``.npz`` may give its arrays: this module's option names, or Keras's (``mnist.npz``)."""


def as_tensor(values: Any, where: str, kinds: str, allowed: str) -> Tensor:
    """``values`` (a numpy array or a tensor) as a tensor, refused unless its dtype is of one of numpy's ``kinds``
    (``u`` unsigned, ``i`` signed integers, ``f`` floating point); ``allowed`` says what is, in the error."""
    if isinstance(values, Tensor):
        kind, dtype = _tensor_kind(values.dtype), str(values.dtype).removeprefix("torch.")
    elif isinstance(values, np.ndarray):
        kind, dtype = values.dtype.kind, str(values.dtype)
    else:
        raise UserInputError(f"{where} is a {type(values).__name__}: give a numpy array or a torch tensor of {allowed}")
    if kind not in kinds:
        raise UserInputError(f"{where} holds {dtype} values: it must hold {allowed}")
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(np.require(values, requirements=["C", "W"]))
    return values.detach().cpu()


def _tensor_kind(dtype: torch.dtype) -> str:
    """The kind numpy would give a dtype of torch's: ``b`` bool, ``f`` floating, ``c`` complex, ``u`` or ``i``."""
    if dtype == torch.bool:
        return "b"
    if dtype.is_floating_point or dtype.is_complex:
        return "f" if dtype.is_floating_point else "c"
    return "u" if str(dtype).startswith("torch.uint") else "i"


def _image_tensor(values: _ArrayLike, where: str) -> Tensor:
    """Images as ``(N, C, H, W)``, uint8 or float32, after the checks of what images may be (see the module)."""
    allowed = "uint8 pixels (0..255) or floating-point ones (scaled to [0, 1])"
    images = as_tensor(values, where, "uf", allowed)
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise UserInputError(f"{where} holds {images.dtype} values: it must hold {allowed}, e.g. .astype(numpy.uint8)")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.permute(0, 3, 1, 2).contiguous()  # (N, H, W, C), as PIL and Keras hold images
    if images.ndim != 4 or images.shape[1] not in (1, 3) or not len(images):
        raise UserInputError(
            f"{where} has shape {tuple(values.shape)}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C) with "
            f"N >= 1 and C = 1 (greyscale) or 3 (RGB)"
        )
    check_square(images.shape[2], images.shape[3], where)
    if images.is_floating_point():
        images = images.float()
        if not torch.isfinite(images).all():
            raise UserInputError(f"{where} holds NaN or infinite pixels: every pixel must be a finite number")
    return images


def _label_tensor(values: _ArrayLike, count: int, where: str, images: str) -> Tensor:
    """Class labels as a long tensor of ``count`` values, refused unless they are integers of 0 or more."""
    labels = as_tensor(values, where, "ui", "integer class labels (0, 1, ...), e.g. .astype(numpy.int64)").long()
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.flatten()
    if labels.ndim != 1 or len(labels) != count:
        raise UserInputError(
            f"{where} has shape {tuple(values.shape)}: it must hold one label per image, ({count},) for the {count} "
            f"images of {images}"
        )
    if labels.min() < 0:
        raise UserInputError(f"{where} holds negative labels ({labels.min().item()}): classes are 0, 1, ...")
    return labels


def _channel_statistics(pixels: Tensor, where: str) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each channel of ``(N, C, H, W)`` pixels on the scale the network sees them
    (:func:`~project.data.in_memory.unit_scaled`), summed in float64 a chunk of images at a time."""
    channels = pixels.shape[1]
    total, squares, count = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64), 0
    for chunk in pixels.split(4096):
        values = unit_scaled(chunk).double().transpose(0, 1).reshape(channels, -1)
        total, squares, count = total + values.sum(1), squares + values.square().sum(1), count + values.shape[1]
    mean = total / count
    std = ((squares / count - mean.square()).clamp(min=0) * count / max(count - 1, 1)).sqrt()
    if not (std > 0).all():
        raise UserInputError(
            f"{where}: every pixel has the same value, so there is no spread to normalise by: give "
            f"data.mean and data.std"
        )
    return mean.tolist(), std.tolist()


class TensorDataModule(ImageDataModule):
    """Images and labels already in memory, as numpy arrays or torch tensors built in Python::

        data = TensorDataModule(images, labels, batch_size=32, split=Split(samples_per_class=10))

    ``test_images`` and ``test_labels`` give the test split; without them ``data.split.test_size`` images of the
    training arrays are held out for testing (seeded with ``split_seed + 1``, not stratified), and never trained or
    validated on. The validation split, few-shot subsets, label rules, exact resume and the in-memory path are those
    of every data module (:class:`~project.data.ImageDataModule`).

    Args:
        train_images, train_labels: the training images and their class labels (see :mod:`project.data.arrays`).
        test_images, test_labels: the test split, both or neither.
        num_classes: the number of classes; default: the largest label plus one.
        mean, std: the normalisation, one number or one per channel; default: computed from the training images
            (the training arrays less the held-out test part), per channel.
        **kwargs: see :class:`~project.data.ImageDataModule` (batch_size, split, labels (class names among them),
            augment, loading).
    """

    unrecorded_arguments = ("train_images", "train_labels", "test_images", "test_labels")

    def __init__(
        self,
        train_images: _ArrayLike,
        train_labels: _ArrayLike,
        test_images: _ArrayLike | None = None,
        test_labels: _ArrayLike | None = None,
        num_classes: int | None = None,
        mean: float | list[float] | None = None,
        std: float | list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        train = self.split_of(train_images, train_labels, "train_images", "train_labels")
        test = None
        if (test_images is None) != (test_labels is None):
            raise UserInputError("data.test_images and data.test_labels go together: give both, or neither")
        if test_images is not None:
            test = self.split_of(test_images, test_labels, "test_images", "test_labels")
            if test.pixels.shape[1:] != train.pixels.shape[1:]:
                raise UserInputError(
                    f"the test images are {tuple(test.pixels.shape[1:])} and the training images "
                    f"{tuple(train.pixels.shape[1:])} (C, H, W): both splits must have the same shape"
                )
        self.held_out = None if test is not None else self.split.test_split(len(train.targets))
        self.num_classes = self.checked_num_classes(num_classes, train, test)
        self.labels.check_classes(self.num_classes)
        self.image_shape = tuple(train.pixels.shape[1:])
        self.mean, self.std = self.stated_or_computed(mean, std, train)
        self.train_data = PixelTensors(train)
        self.test_data = PixelTensors(test) if test is not None else None

    def source(self, option: str) -> str:
        """What an error calls the array of ``option``: the option (the file, for :class:`ArrayDataModule`)."""
        return f"data.{option}"

    def split_of(self, images: _ArrayLike, labels: _ArrayLike, images_option: str, labels_option: str) -> SplitTensors:
        pixels = _image_tensor(images, self.source(images_option))
        targets = _label_tensor(labels, len(pixels), self.source(labels_option), self.source(images_option))
        return SplitTensors(pixels, targets)

    def checked_num_classes(self, given: int | None, train: SplitTensors, test: SplitTensors | None) -> int:
        found = {"train_labels": train.targets.max().item()}
        if test is not None:
            found["test_labels"] = test.targets.max().item()
        if given is not None:
            check_class_count(given)
        if given is None and max(found.values()) < 1:
            raise UserInputError(f"{self.source('train_labels')} holds one class (0): a task needs two or more")
        given = max(found.values()) + 1 if given is None else given
        for option, largest in found.items():
            if largest >= given:
                raise UserInputError(
                    f"{self.source(option)} holds the label {largest}, outside the {given} classes 0..{given - 1} of "
                    f"data.num_classes: give labels below it, or a larger num_classes"
                )
        return given

    def stated_or_computed(
        self, mean: float | list[float] | None, std: float | list[float] | None, train: SplitTensors
    ) -> tuple[list[float], list[float]]:
        if (mean is None) != (std is None):
            raise UserInputError("data.mean and data.std go together: give both, or neither (computed from the data)")
        channels = train.pixels.shape[1]
        if mean is None:
            kept = train.pixels if self.held_out is None else train.pixels[self.held_out[0]]
            return _channel_statistics(kept, self.source("train_images"))
        stated_mean, stated_std = per_channel_normalisation(mean, std, channels)
        return list(stated_mean), list(stated_std)

    def prepare_data(self) -> None:
        """Nothing to fetch: the arrays were read and checked when the module was built."""

    def load_split(self, train: bool) -> Dataset:
        if self.held_out is None:
            return self.train_data if train else self.test_data
        kept, held = self.held_out
        return Subset(self.train_data, (kept if train else held).tolist())

    def split_labels(self, dataset: Dataset) -> Tensor:
        base = dataset
        while isinstance(base, Subset):
            base = base.dataset
        return subset_labels(dataset, base.targets)

    def normalisation(self) -> tuple[list[float], list[float]]:
        return list(self.mean), list(self.std)


def _read_array(path: Path, option: str, archive: bool = False) -> Any:
    """The array of a ``.npy`` file (or, ``archive``: the open ``.npz``), read without unpickling anything."""
    if not path.is_file():
        raise DataNotFoundError(
            f"data.{option}: {path.resolve()} does not exist (relative names are read from data.data_dir, "
            f"else the current folder)"
        )
    with path.open("rb") as file:
        magic = file.read(6)
    numpy_format = magic == b"\x93NUMPY" or magic.startswith(b"PK\x03\x04")  # a .npy, or a zip (.npz)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        if "Object arrays" in str(error) or not numpy_format:
            what = "an array of Python objects" if numpy_format else "not a .npy or .npz file (a pickle?)"
            raise UserInputError(
                f"{path} (data.{option}) is {what}: files are data and are read without unpickling; "
                f"save plain numeric arrays with numpy.save or numpy.savez"
            ) from None
        raise UserInputError(f"{path} (data.{option}) is truncated or damaged: {first_line(error)}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile) != archive:
        if not archive:
            loaded.close()
        wanted = "an .npz archive (numpy.savez)" if archive else "one array (numpy.save), not an .npz archive"
        raise UserInputError(f"{path} (data.{option}) must be {wanted}")
    return loaded


def _archive_arrays(path: Path) -> dict[str, np.ndarray | None]:
    """The arrays of an ``.npz`` under this module's names (``train_images``, ...), from either naming of
    :data:`_NPZ_KEYS`; an object array (a pickle) is refused when read."""
    with _read_array(path, "npz", archive=True) as archive:
        keys = set(archive.files)
        names = next((names for names in _NPZ_KEYS if set(names[:2]) <= keys), None)
        if names is None:
            raise UserInputError(
                f"{path} (data.npz) holds the arrays {sorted(keys)}: it must hold train_images and train_labels (and "
                f"optionally test_images, test_labels), or Keras's x_train, y_train (x_test, y_test)"
            )
        try:
            return {
                ours: archive[theirs] if theirs in keys else None
                for ours, theirs in zip(_NPZ_KEYS[0], names, strict=True)
            }
        except ValueError:
            raise UserInputError(
                f"{path} (data.npz) holds an array of Python objects: files are data and are read "
                f"without unpickling; save plain numeric arrays with numpy.savez"
            ) from None


class ArrayDataModule(TensorDataModule):
    """Classify images stored as arrays: ``.npy`` files (``train_images``, ``train_labels``, and optionally
    ``test_images``, ``test_labels``) or one ``.npz`` holding arrays of those names (or Keras's ``x_train``,
    ``y_train``, ``x_test``, ``y_test``). Without a test split, ``data.split.test_size`` of the training images are
    held out (seeded) for testing. Relative file names are read from ``data_dir`` when it is given, else the current
    folder.

    Args:
        train_images, train_labels, test_images, test_labels: ``.npy`` files (see :mod:`project.data.arrays` for
            the shapes and dtypes they may hold).
        npz: one ``.npz`` file with the arrays instead.
        data_dir: the folder relative file names are read from (``evaluate --data.data_dir`` moves it).
        **kwargs: see :class:`TensorDataModule` (num_classes, mean, std) and :class:`~project.data.ImageDataModule`
            (batch_size, split, labels, augment, loading).
    """

    unrecorded_arguments = ()  # file names: plain values

    def __init__(
        self,
        train_images: str | None = None,
        train_labels: str | None = None,
        test_images: str | None = None,
        test_labels: str | None = None,
        npz: str | None = None,
        data_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        folder = Path(data_dir).expanduser() if data_dir else Path()
        named = {
            "train_images": train_images,
            "train_labels": train_labels,
            "test_images": test_images,
            "test_labels": test_labels,
        }
        if npz is not None and any(named.values()):
            raise UserInputError("data.npz holds every array: give it alone, or the .npy files (data.train_images ...)")
        if npz is None and not (train_images and train_labels):
            raise UserInputError(
                "ArrayDataModule needs data.train_images and data.train_labels (.npy files), or data.npz (one .npz "
                "with train_images, train_labels and optionally test_images, test_labels)"
            )
        self.files = (
            {option: folder / npz for option in named}
            if npz
            else {option: folder / name for option, name in named.items() if name}
        )
        arrays = (
            _archive_arrays(folder / npz)
            if npz
            else {option: _read_array(path, option) for option, path in self.files.items()}
        )
        super().__init__(**{**named, **arrays}, data_dir=data_dir, **kwargs)
        self.data_dir = folder  # where relative names are read from

    def source(self, option: str) -> str:
        path = self.files.get(option)
        if path is None:
            return super().source(option)
        return f"{path} ({option})" if path.suffix == ".npz" else f"{path} (data.{option})"
