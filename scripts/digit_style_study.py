#!/usr/bin/env python
"""What MNIST-style preprocessing changes for digits that do not look like MNIST's: a network trained on MNIST predicts
MNIST test digits drawn as a user's photo or scan would show them, once resized only (the default) and once made to
look like MNIST's first (``--mnist_style`` of ``python -m project predict``, ``data.mnist_style`` of the folder module).

Each of ``--count`` MNIST test digits (the first ones) is drawn as dark ink on light, slightly noisy paper, scaled to
a larger side of 30-90% of a 96x96 picture and placed anywhere in it (seeded). The pictures are written as PNG files and
predicted through :class:`project.inference.Predictor`, as ``scripts/predict.py`` does; the untouched 28x28 test
digits are predicted too, as the reference. Each digit is also scanned small and faint, as a low-resolution scan would
show it: its square box downsampled to 8x8 (antialiased), upscaled to 28x28 and at half contrast, mid-grey strokes on
black and on light, slightly noisy paper. Writes ``<out>/digit_style.png`` (examples: the picture, what the network
sees after resizing, and after MNIST-style preprocessing) and prints a Markdown table.

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

from project.inference.prediction import Predictor

CANVAS = 96
SCAN = 8


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


def small_scan(digit: torch.Tensor, on_paper: bool, generator: torch.Generator) -> Image.Image:
    """An MNIST digit as a small, faint scan shows it: its square box at 8x8, upscaled to 28x28, at half contrast."""
    rows, columns = torch.nonzero(digit > 0, as_tuple=True)
    half = (max(rows.max() - rows.min(), columns.max() - columns.min()) + 1) // 2 + 1  # a 1-pixel margin
    centre_row, centre_column = (rows.min() + rows.max()) // 2 + half, (columns.min() + columns.max()) // 2 + half
    padded = torch.nn.functional.pad(digit.float(), (half, half, half, half))
    box = padded[centre_row - half : centre_row + half + 1, centre_column - half : centre_column + half + 1]
    small = TF.resize(box[None], [SCAN, SCAN], antialias=True)
    ink = 0.5 * TF.resize(small, [28, 28], antialias=True)[0].clamp(0, 255)  # bilinear, mid-grey strokes
    pixels = 200 + 6 * torch.randn(28, 28, generator=generator) - ink if on_paper else ink
    return TF.to_pil_image(pixels.clamp(0, 255).round().to(torch.uint8)[None])


def accuracy(predictor: Predictor, paths: list[Path], labels: list[int]) -> float:
    rows, skipped = predictor.predict(paths)
    assert not skipped, skipped
    return sum(int(row["predicted"]) == label for row, label in zip(rows, labels, strict=True)) / len(labels)


def examples(pictures: list[Path], plain: Predictor, styled: Predictor, path: Path) -> None:
    figure = Figure(figsize=(2 * len(pictures), 6.3))
    axes = figure.subplots(3, len(pictures), squeeze=False)
    for column, picture in enumerate(pictures):
        shown = [Image.open(picture), plain.conversion.decode(picture)[0], styled.conversion.decode(picture)[0]]
        titles = ("drawn" if picture.name.startswith("drawn") else "scanned", "resized", "MNIST style")
        for row, (image, title) in enumerate(zip(shown, titles, strict=True)):
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
    scanner = torch.Generator().manual_seed(args.seed + 1)  # the scans' paper: the drawn photos stay as they were
    labels = test.targets[: args.count].tolist()
    with tempfile.TemporaryDirectory() as folder:
        originals, pictures, dark_scans, light_scans = [], [], [], []
        for index in range(args.count):
            originals.append(Path(folder) / f"mnist_{index}.png")
            TF.to_pil_image(test.data[index][None]).save(originals[-1])
            pictures.append(Path(folder) / f"drawn_{index}.png")
            user_like(test.data[index], generator).save(pictures[-1])
            for scans, on_paper in ((light_scans, False), (dark_scans, True)):
                scans.append(Path(folder) / f"scan_{'dark' if on_paper else 'light'}_{index}.png")
                small_scan(test.data[index], on_paper, scanner).save(scans[-1])
        plain, styled = Predictor.load(args.checkpoint), Predictor.load(args.checkpoint, mnist_style=True)
        found = {("MNIST test digits as they are", "resized only"): accuracy(plain, originals, labels)}
        found["MNIST test digits", "MNIST style again"] = accuracy(styled, originals, labels)
        for images, paths in (
            ("drawn as a photo", pictures),
            ("faint 8x8 scan, light on black", light_scans),
            ("faint 8x8 scan, dark on paper", dark_scans),
        ):
            found[images, "resized to 28x28"] = accuracy(plain, paths, labels)
            found[images, "MNIST style"] = accuracy(styled, paths, labels)
        args.out.mkdir(parents=True, exist_ok=True)
        shown = [*pictures[:4], *light_scans[4:6], *dark_scans[6:8]]
        examples(shown, plain, styled, args.out / "digit_style.png")
    print(f"Accuracy of {args.checkpoint} on the first {args.count} MNIST test digits:\n")
    print("| images | preprocessing | accuracy |\n|---|---|---|")
    for (images, preprocessing), value in found.items():
        print(f"| {images} | {preprocessing} | {value:.2%} |")
    print(f"\nwrote {args.out / 'digit_style.png'}")


if __name__ == "__main__":
    main()
