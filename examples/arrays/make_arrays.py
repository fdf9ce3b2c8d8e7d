"""A small dataset as arrays, as your own might come: ``images.npy`` (N, 28, 28) uint8, ``labels.npy`` (N,) integers;
four classes of strokes on noise (a horizontal bar, a vertical bar, a square's outline, a diagonal).

    python examples/arrays/make_arrays.py [FOLDER] [--count N]    # FOLDER: data/arrays/, which config.yaml reads
"""

import argparse
from pathlib import Path

import numpy as np


def make(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 4, count)
    images = generator.integers(0, 60, (count, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        row, col = generator.integers(3, 16, 2)
        box = image[row : row + 10, col : col + 10]  # a view: drawing on it draws on the image
        if label == 0:
            box[5] = 255
        elif label == 1:
            box[:, 5] = 255
        elif label == 2:
            box[[0, -1]] = box[:, [0, -1]] = 255
        else:
            np.fill_diagonal(box, 255)
    return images, labels


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=Path("data/arrays"))
    parser.add_argument("--count", type=int, default=1200)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(("images", "labels"), make(args.count), strict=True):
        np.save(args.folder / f"{name}.npy", array)
        print(f"wrote {args.folder / name}.npy {array.shape}")
