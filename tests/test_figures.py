"""Figures: read at normal zoom (size in pixels, text in points), every class named in full, no label over another."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from project.data import MNISTDataModule
from project.reports.figures import (
    DPI,
    SMALLEST_TEXT,
    confusion_figure,
    confusion_picture,
    grid_picture,
    image_grid,
    picture,
)

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def drawn_texts(figure: Figure) -> list[Text]:
    """Every visible, non-empty text of ``figure`` after drawing it (tick labels, axis labels, title, counts)."""
    picture(figure)  # lays the figure out and draws it
    texts = figure.findobj(lambda artist: isinstance(artist, Text) and artist.get_visible() and artist.get_text())
    return [text for text in texts if text.get_text().strip()]


def overlapping(texts: list[Text], figure: Figure) -> list[tuple[str, str]]:
    renderer = figure.canvas.get_renderer()
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def labels(figure: Figure) -> list[Text]:
    axes = figure.axes[0]
    return [*axes.get_xticklabels(), *axes.get_yticklabels(), axes.xaxis.label, axes.yaxis.label, axes.title]


def test_the_confusion_matrix_names_each_class_in_full_with_no_label_over_another(tmp_path):
    figure = confusion_figure(torch.randint(0, 1000, (10, 10)), FASHION, "Fashion-MNIST: best.ckpt on the test split")
    texts = drawn_texts(figure)
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == FASHION
    assert [label.get_text() for label in axes.get_yticklabels()] == FASHION
    assert overlapping([text for text in labels(figure) if text.get_text()], figure) == []
    assert min(text.get_fontsize() for text in texts) >= SMALLEST_TEXT
    figure.savefig(tmp_path / "confusion_matrix.png")
    width, height = Image.open(tmp_path / "confusion_matrix.png").size
    assert 900 <= width <= 1100 and 700 <= height <= 1100


def test_negative_control_horizontal_full_names_in_a_small_figure_do_overlap():
    figure = Figure(figsize=(4, 4), dpi=DPI)
    axes = figure.subplots()
    axes.imshow(np.zeros((10, 10)))
    axes.set_xticks(range(10), FASHION, fontsize=12)
    drawn_texts(figure)
    assert overlapping(list(axes.get_xticklabels()), figure)  # the check above finds overlaps where there are some


def test_a_long_class_name_is_wrapped_onto_lines_and_never_cut():
    names = ["a rather long class name of many words", "short"]
    figure = confusion_figure([[3, 1], [0, 4]], names)
    drawn_texts(figure)
    tick = figure.axes[0].get_yticklabels()[0].get_text()
    assert "\n" in tick and tick.replace("\n", " ") == names[0]
    assert overlapping([text for text in labels(figure) if text.get_text()], figure) == []


def test_tensorboards_pictures_are_about_a_screen_half_wide_with_text_of_ten_points_or_more():
    confusion = confusion_picture(torch.randint(0, 50, (10, 10)), FASHION)
    assert confusion.dtype == np.uint8 and confusion.shape[2] == 3 and 900 <= confusion.shape[1] <= 1000
    images = torch.randn(16, 1, 28, 28)
    titles = [f"true {FASHION[i % 10]}\npred {FASHION[(3 * i) % 10]}\nloss 2.31" for i in range(16)]
    grid = grid_picture(images, titles)
    assert grid.dtype == np.uint8 and 900 <= grid.shape[1] <= 1000
    figure = image_grid(images, titles)
    texts = drawn_texts(figure)
    assert [text.get_text() for text in texts] == titles  # the titles in full, one per image
    assert min(text.get_fontsize() for text in texts) >= SMALLEST_TEXT
    assert overlapping(texts, figure) == []


def test_each_image_of_the_grid_is_shown_enlarged_and_scaled_to_its_own_range():
    images = torch.zeros(2, 1, 28, 28)
    images[0, 0, :14] = 5.0  # top half bright: white after scaling, whatever the range
    images[1] = torch.linspace(-3, 3, 28).expand(28, 28)
    grid = grid_picture(images, ["a", "b"], columns=2)
    assert grid.shape[1] >= 2 * 28 * 4  # each image enlarged at least four times
    left = grid[:, : grid.shape[1] // 2]
    assert (left == 255).all(axis=2).any() and (left == 0).all(axis=2).any()  # its own range: black and white


@pytest.mark.parametrize(("dataset", "name"), [("mnist", "MNIST"), ("fashion_mnist", "Fashion-MNIST")])
def test_a_data_module_names_its_dataset_as_people_know_it(dataset, name, tmp_path):
    assert MNISTDataModule(dataset=dataset, data_dir=str(tmp_path), download=False).dataset_name == name
