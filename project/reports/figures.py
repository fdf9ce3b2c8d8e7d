"""Figures: a confusion matrix and a grid of titled images.

The reports and the notebook draw with matplotlib's object API (no display, no pyplot state); TensorBoard's images,
drawn every validation epoch, are pictures made with PIL directly (:func:`grid_picture`, :func:`confusion_picture`;
why: docs/speed.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CELL = 84
"""Side of one image in a picture grid, in pixels."""


def confusion_figure(confusion: list[list[int]] | Tensor, class_names: list[str], title: str = "") -> Figure:
    """The confusion matrix as a heat map with counts (rows: true class, columns: predicted class)."""
    from matplotlib.figure import Figure

    matrix = torch.as_tensor(confusion)
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure = Figure(figsize=(size, size), dpi=100)
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names, rotation=90 if len(class_names) > 10 else 0)
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)
    if len(class_names) <= 20:
        threshold = matrix.max().item() / 2
        cells = torch.cartesian_prod(*map(torch.arange, matrix.shape)).tolist()
        for (row, column), count in zip(cells, matrix.flatten().tolist(), strict=True):
            color = "white" if count > threshold else "black"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8, color=color)
    figure.tight_layout()
    return figure


def image_grid(images: Tensor, titles: list[str], columns: int = 8) -> Figure:
    """Grey or colour images (N, C, H, W) in a grid, each with its title; each image is scaled to its own range."""
    from matplotlib.figure import Figure

    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows), dpi=80)
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(axes_grid.flat):
        axes.axis("off")
        if index < len(images):
            image = images[index]
            picture = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
            axes.imshow((picture - picture.min()) / (picture.max() - picture.min() + 1e-8), cmap="gray")
            axes.set_title(titles[index], fontsize=9)
    figure.tight_layout()
    return figure


def _to_uint8(image: Tensor) -> np.ndarray:
    """An image (C, H, W) of any range as uint8 H x W x 3, scaled to its own range."""
    picture = image.float()
    picture = (picture - picture.min()) / (picture.max() - picture.min() + 1e-8)
    picture = (picture * 255).round().byte().permute(1, 2, 0)
    return picture.expand(-1, -1, 3).numpy() if picture.shape[2] == 1 else picture.numpy()


def grid_picture(images: Tensor, titles: list[str], columns: int = 8) -> np.ndarray:
    """Images (N, C, H, W) in a grid, each with its (multi-line) title above it, as an H x W x 3 uint8 array."""
    font = ImageFont.load_default()
    title_height = 12 * max((title.count("\n") + 1 for title in titles), default=1) + 4
    rows = max(1, -(-len(images) // columns))
    canvas = Image.new("RGB", (columns * _CELL, rows * (_CELL + title_height)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (image, title) in enumerate(zip(images, titles, strict=True)):
        left, top = (index % columns) * _CELL, (index // columns) * (_CELL + title_height)
        draw.multiline_text((left + 3, top + 2), title, fill="black", font=font, spacing=1)
        tile = Image.fromarray(_to_uint8(image)).resize((_CELL - 6, _CELL - 6), Image.Resampling.NEAREST)
        canvas.paste(tile, (left + 3, top + title_height))
    return np.asarray(canvas)


def confusion_picture(confusion: Tensor, class_names: list[str]) -> np.ndarray:
    """The confusion matrix as a heat map with counts (rows: true class, columns: predicted class), as an array."""
    matrix = torch.as_tensor(confusion).long()
    size, cell, margin = len(class_names), 36, 70
    canvas = Image.new("RGB", (margin + size * cell + 4, margin + size * cell + 4), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((4, 4), "rows: true class, columns: predicted class", fill="black", font=font)
    peak = max(int(matrix.max()), 1)
    for row in range(size):
        draw.text((4, margin + row * cell + 12), class_names[row][:10], fill="black", font=font)
        draw.text((margin + row * cell + 2, margin - 16), class_names[row][:5], fill="black", font=font)
        for column in range(size):
            count = int(matrix[row, column])
            shade = round(255 * (1 - 0.85 * count / peak))
            box = (
                margin + column * cell,
                margin + row * cell,
                margin + (column + 1) * cell - 1,
                margin + (row + 1) * cell - 1,
            )
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + 4, box[1] + 12), str(count), fill="white" if shade < 100 else "black", font=font)
    return np.asarray(canvas)
