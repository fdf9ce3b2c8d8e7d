"""Figures drawn with matplotlib's object API (no display, no pyplot state): a confusion matrix and a grid of images.
The evaluation reports, the TensorBoard images and the notebook all draw with these."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor


def confusion_figure(confusion: list[list[int]] | Tensor, class_names: list[str], title: str = "") -> Figure:
    """The confusion matrix as a heat map with counts (rows: true class, columns: predicted class)."""
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
