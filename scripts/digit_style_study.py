#!/usr/bin/env python
"""What MNIST-style preprocessing changes for digits that do not look like MNIST's: a network trained on MNIST predicts
MNIST test digits drawn as a user's photo or scan would show them, once resized only (the default) and once made to
look like MNIST's first (``--mnist-style`` of ``scripts/predict.py``, ``data.mnist_style`` of the folder module).

Each of ``--count`` MNIST test digits (the first ones) is drawn as dark ink on light, slightly noisy paper, scaled to
a larger side of 30-90% of a 96x96 picture and placed anywhere in it (seeded). The pictures are written as PNG files and
predicted through :class:`project.prediction.Predictor`, as ``scripts/predict.py`` does; the untouched 28x28 test
digits are predicted too, as the reference. Writes ``<out>/digit_style.png`` (examples: the drawn picture, what
the network sees after resizing, and after MNIST-style preprocessing) and prints a Markdown table.

    python -m project fit                     # the MNIST network (logs/mnist/version_0)
    python scripts/digit_style_study.py logs/mnist/version_0/checkpoints/last.ckpt --data-dir ../shared/data --out docs
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image
from torchvision.datasets import MNIST
from torchvision.transforms import functional as TF

from project.prediction import Predictor

CANVAS = 96


def user_like(digit: torch.Tensor, generator: torch.Generator) -> Image.Image:
    """An MNIST digit (28x28, light on black) as a photo would show it: dark on light paper, another size, anywhere."""
    rows, columns = torch.nonzero(digit > 0, as_tuple=True)
    ink = digit[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1].float()
    side = CANVAS * (0.3 + 0.6 * torch.rand(1, generator=generator).item())  # the digit's larger side
    scale = side / max(ink.shape)
    height, width = (max(1, round(length * scale)) for length in ink.shape)
    ink = TF.resize(ink[None], [height, width], antialias=True)[0].clamp(0, 255)
    top = int(torch.randint(0, CANVAS - height + 1, (1,), generator=generator))
    left = int(torch.randint(0, CANVAS - width + 1, (1,), generator=generator))
    paper = 225 + 10 * torch.randn(CANVAS, CANVAS, generator=generator)
    paper[top : top + height, left : left + width] -= ink * 0.8  # dark ink on the paper
    return TF.to_pil_image(paper.clamp(0, 255).round().to(torch.uint8)[None])


def accuracy(predictor: Predictor, paths: list[Path], labels: list[int]) -> float:
    rows, skipped = predictor.predict(paths)
    assert not skipped, skipped
    return sum(int(row["predicted"]) == label for row, label in zip(rows, labels, strict=True)) / len(labels)


def examples(pictures: list[Path], plain: Predictor, styled: Predictor, path: Path) -> None:
    figure = Figure(figsize=(2 * len(pictures), 6.3))
    axes = figure.subplots(3, len(pictures))
    for column, picture in enumerate(pictures):
        shown = [Image.open(picture), plain.conversion.decode(picture)[0], styled.conversion.decode(picture)[0]]
        for row, (image, title) in enumerate(zip(shown, ("drawn", "resized", "MNIST style"), strict=True)):
            axes[row, column].imshow(image, cmap="gray")
            axes[row, column].set_axis_off()
            axes[row, column].set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint of a network trained on MNIST")
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    if args.count < 1:
        parser.error(f"--count must be a positive integer, got {args.count}")
    test = MNIST(args.data_dir, train=False, download=False)
    generator = torch.Generator().manual_seed(args.seed)
    labels = test.targets[: args.count].tolist()
    with tempfile.TemporaryDirectory() as folder:
        originals, pictures = [], []
        for index in range(args.count):
            originals.append(Path(folder) / f"mnist_{index}.png")
            TF.to_pil_image(test.data[index][None]).save(originals[-1])
            pictures.append(Path(folder) / f"drawn_{index}.png")
            user_like(test.data[index], generator).save(pictures[-1])
        plain, styled = Predictor.load(args.checkpoint), Predictor.load(args.checkpoint, mnist_style=True)
        found = {
            "MNIST test digits as they are": accuracy(plain, originals, labels),
            "MNIST test digits, MNIST style again": accuracy(styled, originals, labels),
            "drawn as a photo, resized to 28x28": accuracy(plain, pictures, labels),
            "drawn as a photo, MNIST style": accuracy(styled, pictures, labels),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        examples(pictures[:8], plain, styled, args.out / "digit_style.png")
    print(f"Accuracy of {args.checkpoint} on the first {args.count} MNIST test digits:\n")
    print("| images | preprocessing | accuracy |\n|---|---|---|")
    for name, value in found.items():
        images, _, preprocessing = name.partition(", ")
        print(f"| {images} | {preprocessing or 'resized only'} | {value:.2%} |")
    print(f"\nwrote {args.out / 'digit_style.png'}")


if __name__ == "__main__":
    main()
