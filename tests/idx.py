"""Write small datasets in MNIST's IDX format, so tests run torchvision's real loading code without the real files."""

from __future__ import annotations

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
