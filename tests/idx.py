"""Write small datasets in MNIST's IDX format, so tests run torchvision's real loading code without the real files."""

from __future__ import annotations

import bz2
import struct
from pathlib import Path

import numpy as np

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """``images``: uint8 array of shape (N, rows, cols)."""
    count, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", IMAGE_MAGIC, count, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """``labels``: integer array of shape (N,), values 0-255."""
    path.write_bytes(struct.pack(">II", LABEL_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes())


def write_idx_int32(path: Path, array: np.ndarray) -> None:
    """An IDX file of big-endian int32 values (type code 0x0C), as QMNIST stores its labels."""
    header = struct.pack(">I", 0x0C00 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(">i4").tobytes())


def synthetic_digits(count: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 images: class k is a bright 6x6 square at a position of its own, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels, strict=True):
        row, col = 2 + 8 * (label // 4), 2 + 6 * (label % 4)
        image[row : row + 6, col : col + 6] = 255
    return images, labels


def write_mnist_folder(root: Path, folder: str = "MNIST", train_count: int = 600, test_count: int = 200) -> Path:
    """Write ``root/<folder>/raw/`` with the four files torchvision's MNIST classes read; returns ``root``."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", train_count, 0), ("t10k", test_count, 1)):
        images, labels = synthetic_digits(count, seed)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def write_torchvision_dataset(root: Path, name: str, train_count: int = 300, test_count: int = 100) -> Path:
    """Write ``name`` (a key of project.data.TORCHVISION_DATASETS) in the exact files torchvision reads."""
    if name in ("mnist", "fashion_mnist", "kmnist"):
        folder = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}[name]
        return write_mnist_folder(root, folder, train_count, test_count)
    if name.startswith("emnist_"):
        split = name.removeprefix("emnist_")
        raw = root / "EMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        num_classes, offset = (26, 1) if split == "letters" else (47, 0)
        for part, count, seed in (("train", train_count, 0), ("test", test_count, 1)):
            images, labels = synthetic_digits(count, seed, num_classes=10)
            labels = (np.arange(count) % num_classes) + offset
            write_idx_images(raw / f"emnist-{split}-{part}-images-idx3-ubyte", images)
            write_idx_labels(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", labels)
        return root
    if name == "qmnist":
        raw = root / "QMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for part, count, seed in (("train", train_count, 0), ("test", test_count, 1)):
            images, labels = synthetic_digits(count, seed)
            # QMNIST's 8 label columns: class, NIST hsf, writer id, digit index, ...; torchvision uses column 0.
            columns = np.stack([labels, *(np.full(count, k) for k in range(1, 8))], axis=1)
            write_idx_images(raw / f"qmnist-{part}-images-idx3-ubyte", images)
            write_idx_int32(raw / f"qmnist-{part}-labels-idx2-int", columns)
        return root
    if name == "usps":
        folder = root / "USPS"
        folder.mkdir(parents=True, exist_ok=True)
        for filename, count, seed in (("usps.bz2", train_count, 0), ("usps.t.bz2", test_count, 1)):
            images, labels = synthetic_digits(count, seed)
            small = np.pad(images, ((0, 0), (2, 2), (2, 2)))[:, ::2, ::2] / 255 * 2 - 1  # 16x16 in [-1, 1], as USPS
            lines = [
                f"{label + 1} " + " ".join(f"{i + 1}:{value:.6f}" for i, value in enumerate(image.flatten()))
                for image, label in zip(small, labels, strict=True)
            ]
            (folder / filename).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
        return root
    raise ValueError(name)
