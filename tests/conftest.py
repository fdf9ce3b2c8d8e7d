"""Shared fixtures: generated MNIST-format data, the real data in ../shared/data, and short CLI runs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from idx import write_mnist_folder

from project import trusted
from project.data import DATA_DIR_ENV
from project.data.cache import CACHE_DIR_ENV
from project.trusted import trust

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
if os.environ.get(DATA_DIR_ENV):  # relative to where pytest started (tests change folders): ../shared/data works
    os.environ[DATA_DIR_ENV] = str(Path(os.environ[DATA_DIR_ENV]).expanduser().resolve())
if not os.environ.get(CACHE_DIR_ENV):  # decoded-image caches in a folder of this session's, not in ./cache
    os.environ[CACHE_DIR_ENV] = tempfile.mkdtemp(prefix="project-test-cache-")
    atexit.register(shutil.rmtree, os.environ[CACHE_DIR_ENV], ignore_errors=True)  # removed when the session ends
# Tests name callbacks of their own in configs (--trainer.callbacks+=helpers.KillAtStep): trusted, as a user's module.
trust("helpers", root=Path(__file__).parent)
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(autouse=True)
def trusted_modules_of_the_test():
    """Modules a test trusts (``--trust``, ``trust()``) are trusted for that test only, as for one command."""
    before = set(trusted.TRUSTED)
    yield
    trusted.TRUSTED.clear()
    trusted.TRUSTED.update(before)


_DRAWING_MODULES = ("test_tensorboard", "test_figures", "test_notebook")
"""The tests of TensorBoard's pictures themselves: they draw them, as runs do."""


@pytest.fixture(autouse=True)
def pictures_left_undrawn(request, monkeypatch):
    """TensorBoard's pictures (the confusion matrix, the image grids) are logged as blank 8x8 images in every test but
    those of the pictures (:data:`_DRAWING_MODULES`): matplotlib takes 0.4 s a validation to draw them, a third of
    the time of the suite's short runs, and the other tests check what is logged, not how it looks."""
    if request.module.__name__ not in _DRAWING_MODULES:
        from project.reports import tensorboard

        def blank(*args, **kwargs):
            return np.zeros((8, 8, 3), dtype=np.uint8)

        monkeypatch.setattr(tensorboard, "confusion_picture", blank)
        monkeypatch.setattr(tensorboard, "grid_picture", blank)


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with small generated MNIST files (600 train, 200 test images) in torchvision's layout."""
    return write_mnist_folder(tmp_path_factory.mktemp("fake_data"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real MNIST files: ``$PROJECT_DATA_DIR`` if set, else ``../shared/data``; skips when they are absent."""
    root = Path(os.environ.get(DATA_DIR_ENV) or SHARED_DATA)
    missing = [name for name in MNIST_FILES if not (root / "MNIST" / "raw" / name).is_file()]
    if missing:
        pytest.skip(f"real MNIST files not found in {root / 'MNIST' / 'raw'} (missing {', '.join(missing)})")
    return root


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory for one run: ``logs/`` is created inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    return tmp_path


@pytest.fixture
def quick_args(fake_data_dir: Path, run_dir: Path) -> list[str]:
    """The ``debug`` preset on the generated data: 2 epochs of 10 training steps, in seconds."""
    return ["--config=debug", f"--data.data_dir={fake_data_dir}", "--data.split.val_size=100"]


@pytest.fixture(scope="session")
def pretrained_checkpoint(tmp_path_factory: pytest.TempPathFactory, fake_data_dir: Path) -> Path:
    """``last.ckpt`` of a short MNIST-format run through the CLI (the "pretrained" network of fine-tuning tests)."""
    from project.cli import run_cli

    folder = tmp_path_factory.mktemp("pretrain")
    previous = Path.cwd()
    os.chdir(folder)
    try:
        args = ["--config=debug", f"--data.data_dir={fake_data_dir}", "--data.split.val_size=100"]
        run_cli(["fit", *args, "--trainer.max_epochs=1", "--test_after_fit=false", "--model.optimizer.lr=0.01"])
    finally:
        os.chdir(previous)
    return folder / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"


def write_image_folder(root: Path, classes: dict[str, int], mode: str = "RGB", size: int = 20) -> Path:
    """``root/<class>/<k>.png`` with ``classes[class]`` images each: class k is a bright square at its own place."""
    from PIL import Image

    for k, (name, count) in enumerate(sorted(classes.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.full((size, size, 3), 30 + i % 20, dtype=np.uint8)
            pixels[2 + 5 * k : 7 + 5 * k, 3:12] = 255
            Image.fromarray(pixels).convert(mode).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of small RGB PNGs (40 images each), in one folder per class."""
    return write_image_folder(tmp_path / "images", {"circle": 40, "square": 40, "triangle": 40})


@pytest.fixture(scope="session")
def exported_folder(tmp_path_factory: pytest.TempPathFactory, pretrained_checkpoint: Path) -> Path:
    """The model folder of ``pretrained_checkpoint`` with every format (ONNX, .pt2, safetensors), config.json and
    README.md."""
    from project.inference.export import FORMATS, export_checkpoint

    out = tmp_path_factory.mktemp("export") / "model"
    export_checkpoint(pretrained_checkpoint, out, FORMATS)
    return out


def write_test_images(data_dir: Path, folder: Path, count: int) -> list[Path]:
    """The first ``count`` MNIST test images of ``data_dir`` as PNG files in ``folder``, named after their index."""
    from PIL import Image
    from torchvision.datasets import MNIST

    folder.mkdir(parents=True, exist_ok=True)
    images = MNIST(str(data_dir), train=False).data[:count]
    paths = [folder / f"{index:03d}.png" for index in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        Image.fromarray(image.numpy()).save(path)
    return paths


@pytest.fixture(scope="session")
def mobilenet_weights(tmp_path_factory) -> str:
    """A torchvision MobileNetV3-small's own state dict in a local file, as if downloaded elsewhere."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    return str(path)
