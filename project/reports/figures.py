"""Figures: a confusion matrix and a grid of titled images, drawn with matplotlib to be read at normal zoom.

Each figure is a matplotlib ``Figure`` made with the object API (no display, no pyplot state): the notebooks show
it, ``python -m project evaluate`` saves the confusion matrix as ``confusion_matrix.png``, and TensorBoard gets it
as a picture (:func:`picture`: the figure drawn to an array, :func:`confusion_picture`, :func:`grid_picture`). The
sizes are chosen for a screen: about :data:`_WIDTH` pixels wide, text of at least
:data:`SMALLEST_TEXT` points, class names in full (the column names slanted, long ones wrapped), nothing
overlapping (constrained layout). Drawing is kept cheap, since TensorBoard's pictures are drawn at every validation:
one axes per figure (the image grid is one mosaic with a title over each tile), no layout pass where the positions
are known.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
"""Dots per inch of every figure: a figure's inches times this is its size in pixels, in TensorBoard and PNG."""
_WIDTH = 960
"""The width of a figure in pixels, for a handful of classes or a grid of images: a screen's half, readable as is."""
SMALLEST_TEXT = 10.0
"""The smallest font size, in points, of any text in a figure."""
_PICTURE_DPI = 150
"""Dots per inch of TensorBoard's pictures: the same :data:`_WIDTH` pixels on fewer inches, so that the text is
larger next to the picture, and still readable when TensorBoard shrinks the picture to its card (about 350 pixels
wide, unless "Show actual image size" is ticked)."""
_NAME_WIDTH = 14
"""Class names longer than this many characters are wrapped onto more lines."""


def _wrapped(name: str, width: int = _NAME_WIDTH) -> str:
    """``name`` on lines of at most ``width`` characters, broken at spaces, slashes or hyphens where it can be."""
    if len(name) <= width:
        return name
    return "\n".join(textwrap.wrap(name.replace("/", "/ "), width, break_on_hyphens=True)).replace("/ ", "/")


def confusion_figure(
    confusion: list[list[int]] | Tensor, class_names: list[str], title: str = "", width: float = _WIDTH / DPI
) -> Figure:
    """The confusion matrix as a heat map with counts (rows: true class, columns: predicted class), the classes
    named in full: the columns' names slanted, long names wrapped. ``width`` inches wide (:data:`_WIDTH` pixels at
    :data:`DPI`) for up to 10 classes, wider with more (a cell stays readable); counts are written in the cells for
    up to 20 classes."""
    from matplotlib.figure import Figure

    matrix = torch.as_tensor(confusion).long()
    count = len(class_names)
    names = [_wrapped(name) for name in class_names]
    side = width * max(1.0, (0.55 * count + 3.5) / 9.0)
    figure = Figure(figsize=(side, side * 0.92), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues", aspect="auto")
    tick_size = 12 if count <= 12 else SMALLEST_TEXT
    axes.set_xticks(range(count), names, rotation=40, ha="right", rotation_mode="anchor", fontsize=tick_size)
    axes.set_yticks(range(count), names, fontsize=tick_size)
    axes.set_xlabel("predicted class", fontsize=13)
    axes.set_ylabel("true class", fontsize=13)
    if title:
        axes.set_title(title, fontsize=14, wrap=True)
    if count <= 20:
        threshold = matrix.max().item() / 2
        count_size = 12 if count <= 12 else SMALLEST_TEXT
        cells = torch.cartesian_prod(*map(torch.arange, matrix.shape)).tolist()
        for (row, column), value in zip(cells, matrix.flatten().tolist(), strict=True):
            color = "white" if value > threshold else "black"
            axes.text(column, row, str(value), ha="center", va="center", fontsize=count_size, color=color)
    return figure


def image_grid(images: Tensor, titles: list[str], columns: int = 4, tile: float = 1.6) -> Figure:
    """Grey or colour images (N, C, H, W) in a grid, each with its (multi-line) title above it, each scaled to its own
    range, all in one axes; each image ``tile`` inches wide (room for a title of 16 characters)."""
    from matplotlib.figure import Figure

    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    lines = max((title.count("\n") + 1 for title in titles), default=1)
    tile, gap = tile * 72, 6 + 14 * lines  # in points: an image, and the title's band above it
    width, height = columns * tile, rows * (tile + gap)
    figure = Figure(figsize=(width / 72, height / 72), dpi=DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    for index, image in enumerate(images):  # each image stretched over its tile by the drawing (nearest neighbour)
        top, left = (index // columns) * (tile + gap) + gap, (index % columns) * tile
        extent = (left + 3, left + tile - 3, top + tile - 3, top + 3)
        axes.imshow(_scaled(image), interpolation="nearest", extent=extent, vmin=0, vmax=1)
        axes.text(left + tile / 2, top - 3, titles[index], ha="center", va="bottom", fontsize=11, linespacing=1.1)
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    return figure


def _scaled(image: Tensor) -> np.ndarray:
    """An image (C, H, W) of any range as an H x W x 3 float array in 0..1, scaled to its own range."""
    picture = image.detach().float().cpu()
    picture = (picture - picture.min()) / (picture.max() - picture.min() + 1e-8)
    picture = picture.expand(3, -1, -1) if picture.shape[0] == 1 else picture[:3]
    return picture.permute(1, 2, 0).numpy()


def picture(figure: Figure, dpi: float = DPI) -> np.ndarray:
    """``figure`` drawn as pixels at ``dpi``: an H x W x 3 uint8 array (what TensorBoard and the trackers take)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure.set_dpi(dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def grid_picture(images: Tensor, titles: list[str], columns: int = 4) -> np.ndarray:
    """:func:`image_grid` as pixels (H x W x 3 uint8) for TensorBoard: :data:`_WIDTH` pixels wide for 4 columns."""
    return picture(image_grid(images, titles, columns), _PICTURE_DPI)


def confusion_picture(confusion: Tensor, class_names: list[str], title: str = "") -> np.ndarray:
    """:func:`confusion_figure` as pixels (H x W x 3 uint8) for TensorBoard: :data:`_WIDTH` pixels wide for up to 10
    classes."""
    return picture(confusion_figure(confusion, class_names, title, _WIDTH / _PICTURE_DPI), _PICTURE_DPI)
