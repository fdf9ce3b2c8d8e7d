"""MNIST-style preprocessing (project.data.digits): a user's digit made to look like MNIST's, in the folder data module,
in prediction and in scripts/digit_style_study.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from project.data.digits import mnist_like
from project.data.files import ImageFolderDataModule
from project.prediction import Predictor

REPO_ROOT = Path(__file__).resolve().parents[1]


def photo_of_a_ring(width: int = 120, height: int = 90) -> Image.Image:
    """A dark ring on light paper, small and off-centre: how a photo of a 0 looks, not how MNIST's do."""
    image = Image.new("L", (width, height), color=230)
    ImageDraw.Draw(image).ellipse((10, 8, 40, 60), outline=20, width=6)
    return image


def test_a_dark_digit_on_light_paper_becomes_light_on_black_fitted_in_20_and_centred_by_mass():
    digit = torch.tensor(list(mnist_like(photo_of_a_ring()).getdata()), dtype=torch.float32).view(28, 28)
    assert digit[0].max() == 0 and digit[:, 0].max() == 0 and digit.max() == 255  # black frame, light ink
    rows, columns = torch.nonzero(digit > 0, as_tuple=True)
    assert max(rows.max() - rows.min() + 1, columns.max() - columns.min() + 1) == 20  # its larger side
    centre_row = (digit.sum(1) * torch.arange(28)).sum() / digit.sum()
    centre_column = (digit.sum(0) * torch.arange(28)).sum() / digit.sum()
    assert abs(centre_row - 13.5) <= 0.5 and abs(centre_column - 13.5) <= 0.5


def test_an_image_without_ink_is_a_black_frame():
    assert mnist_like(Image.new("L", (50, 50), color=200)).getextrema() == (0, 0)


def test_the_folder_module_applies_it_and_checkpoints_record_it_for_prediction(tmp_path, pretrained_checkpoint):
    folder = tmp_path / "digits"
    for name in ("zero", "ring"):
        (folder / name).mkdir(parents=True)
        for index in range(3):
            photo_of_a_ring(100 + 10 * index).save(folder / name / f"{index}.png")
    data = ImageFolderDataModule(data_dir=str(folder), mnist_style=True, val_size=1, test_size=1)
    data.setup("fit")
    pixels = data.conversion.decode(folder / "zero" / "0.png")
    assert pixels.shape == (1, 28, 28) and pixels[0, 0].max() == 0  # as MNIST's: black around the digit
    assert data.preprocessing()["mnist_style"] is True
    predictor = Predictor.load(pretrained_checkpoint, mnist_style=True)
    assert torch.equal(predictor.conversion.decode(folder / "zero" / "0.png"), pixels)


def test_mnist_style_for_a_network_of_rgb_images_is_one_error_line(tmp_path, exported_folder):
    rgb = tmp_path / "rgb"
    shutil.copytree(exported_folder, rgb)
    about = json.loads((rgb / "model.json").read_text())
    about["preprocessing"].update(channels=3, mean=[0.5] * 3, std=[0.25] * 3)  # as an RGB network's export says
    (rgb / "model.json").write_text(json.dumps(about))
    Image.new("L", (30, 30)).save(tmp_path / "blank.png")
    command = [sys.executable, str(REPO_ROOT / "scripts" / "predict.py"), str(rgb / "model.onnx"),
               str(tmp_path / "blank.png"), "--mnist-style", "--out", str(tmp_path / "p.csv")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 2 and not (tmp_path / "p.csv").exists()
    assert result.stderr.strip().splitlines()[-1] == (  # the rule data.mnist_style follows too
        "error: MNIST-style preprocessing makes greyscale digits, as MNIST's are: it takes images of 1 channel "
        "(data.channels 1), and these have 3"
    )


def test_the_study_compares_resizing_with_mnist_style_on_digits_drawn_as_photos(
    tmp_path, pretrained_checkpoint, fake_data_dir
):
    command = [sys.executable, str(REPO_ROOT / "scripts" / "digit_style_study.py"), str(pretrained_checkpoint),
               "--data-dir", str(fake_data_dir), "--count", "40", "--out", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| drawn as a photo | resized to 28x28 |" in result.stdout
    assert "| drawn as a photo | MNIST style |" in result.stdout and (tmp_path / "digit_style.png").is_file()


def test_real_digits_drawn_as_photos_come_back_close_to_mnists_own(real_data_dir):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from digit_style_study import user_like
    from torchvision.datasets import MNIST

    digits = MNIST(str(real_data_dir), train=False).data[:50]
    generator = torch.Generator().manual_seed(0)

    def similarity(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.float().flatten() - a.float().mean(), b.float().flatten() - b.float().mean()
        return float(a @ b / (a.norm() * b.norm()))

    styled, resized = [], []
    for digit in digits:
        photo = user_like(digit, generator)
        styled.append(similarity(torch.tensor(list(mnist_like(photo).getdata())), digit))
        resized.append(similarity(torch.tensor(list(photo.resize((28, 28)).getdata())), digit))
    # Pixel correlation with MNIST's own digit: 0.76 on average after MNIST style, -0.10 after resizing only.
    assert sum(styled) / len(styled) > 0.7 and sum(resized) / len(resized) < 0.1
