"""The batch versions of torchvision's transforms (``project.data.batch_transforms``) draw what v2 draws image by
image: the same parameters (crop offsets, flip rate, angles) and the same pixels (the mean image over many draws),
within a tolerance that a wrong version breaks (negative controls: another flip probability, another range of
angles, one draw for the whole batch); the presets run as batches, and what has no batch version runs per image,
said once."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.transforms import v2

from project.data import Augmentation
from project.data.augment import BatchAugmentation
from project.data.batch_transforms import batch_version

DRAWS = 1000
Z_LIMIT = 5.0
"""Largest z-score of a pixel's mean between two samples of DRAWS images that counts as the same distribution: with
hundreds of pixels, the largest of two equal distributions' is about 3 to 4 (v2 against itself: up to 3.9)."""

KINDS = {
    "crop with padding": v2.RandomCrop(24, padding=3),
    "crop with edge padding": v2.RandomCrop(24, padding=2, padding_mode="edge"),
    "horizontal flip": v2.RandomHorizontalFlip(),
    "vertical flip": v2.RandomVerticalFlip(p=0.3),
    "erasing": v2.RandomErasing(p=0.7, scale=(0.02, 0.3)),
    "erasing with noise": v2.RandomErasing(p=1.0, value="random"),
    "erasing of lopsided rectangles": v2.RandomErasing(p=1.0, scale=(0.05, 0.2), ratio=(0.2, 0.4)),
    "affine": v2.RandomAffine(20, translate=(0.1, 0.2), scale=(0.8, 1.2), shear=(-10, 10, -5, 5)),
    "bilinear affine with a fill": v2.RandomAffine(15, interpolation=v2.InterpolationMode.BILINEAR, fill=0.5),
    "rotation": v2.RandomRotation(30),
    "random-resized crop": v2.RandomResizedCrop(24, scale=(0.2, 1.0)),
    "TrivialAugmentWide": v2.TrivialAugmentWide(),
    "RandAugment": v2.RandAugment(),
    "colour jitter": v2.ColorJitter(0.4, 0.4, 0.4),
}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: small per-image calls on several threads of a busy machine take ten times as long."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def picture(channels: int = 3, size: int = 24) -> torch.Tensor:
    """An image that no crop, flip, rotation or colour change leaves as it is: noise, two bright patches, a bar."""
    image = torch.rand(channels, size, size, generator=torch.Generator().manual_seed(1)) * 0.3
    image[:, 3:10, 2:8] = 0.9
    image[0, 14:20, 5:22] = 0.6
    image[:, :, -3:] += 0.05
    return image.clamp(0, 1)


def per_image(transform: v2.Transform, images: torch.Tensor, seed: int = 1) -> torch.Tensor:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.stack([transform(image) for image in images])


def batched(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, seed: int = 2) -> torch.Tensor:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return transform(images)


def copies(image: torch.Tensor, count: int = DRAWS) -> torch.Tensor:
    return image.expand(count, *image.shape).contiguous()


def largest_z(first: torch.Tensor, second: torch.Tensor) -> float:
    """The largest z-score over the pixels of the difference of two samples' mean images (a floor of 1e-3 on the
    standard error, for pixels that never change)."""
    error = (first.var(dim=0) / len(first) + second.var(dim=0) / len(second)).sqrt()
    return ((first.mean(dim=0) - second.mean(dim=0)).abs() / (error + 1e-3)).max().item()


def ks_distance(first: torch.Tensor, second: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical distributions."""
    values = torch.cat((first, second)).sort().values
    cdf = [torch.searchsorted(sample.sort().values, values, right=True) / len(sample) for sample in (first, second)]
    return (cdf[0] - cdf[1]).abs().max().item()


KS_LIMIT = 1.95 * (2 / DRAWS) ** 0.5
"""The KS statistic two samples of DRAWS values from one distribution exceed once in a thousand."""


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_batch_version_draws_the_pixels_v2_draws_image_by_image(kind):
    transform = KINDS[kind]
    images = copies(picture())
    expected, got = per_image(transform, images), batched(batch_version(transform), images)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert largest_z(expected, got) < Z_LIMIT
    assert abs(got.std(dim=0).mean() - expected.std(dim=0).mean()) < 0.1 * expected.std(dim=0).mean()
    assert len(torch.unique(got.flatten(1), dim=0)) > 1  # one draw per image


@pytest.mark.parametrize(
    ("wrong", "transform"),
    [
        ("another flip probability", (v2.RandomHorizontalFlip(p=0.3), v2.RandomHorizontalFlip(p=0.5))),
        ("angles of another range", (v2.RandomRotation(15), v2.RandomRotation(30))),
        ("one draw for the whole batch", (v2.RandomResizedCrop(24, scale=(0.2, 1.0)),) * 2),
    ],
)
def test_the_pixel_check_fails_a_wrong_batch_version(wrong, transform):
    images = copies(picture())
    expected = per_image(transform[1], images)
    if wrong == "one draw for the whole batch":  # v2 given a batch draws one set of parameters for all its images
        got = batched(transform[0], images)
    else:
        got = batched(batch_version(transform[0]), images)
    assert largest_z(expected, got) > Z_LIMIT


def spot(size: int = 24, row: int = 4, column: int = 18) -> torch.Tensor:
    """A black image with one bright pixel: where it lands says where the image was moved."""
    image = torch.zeros(1, size, size)
    image[0, row, column] = 1.0
    return image


def landing(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of the brightest pixel of each image (the spot), as floats."""
    flat = images.flatten(1).argmax(dim=1)
    return (flat // images.shape[-1]).double(), (flat % images.shape[-1]).double()


def crop_offsets(transform: Callable, images: torch.Tensor) -> torch.Tensor:
    rows, columns = landing(transform(images))
    return torch.stack((rows, columns))


def angles(images: torch.Tensor) -> torch.Tensor:
    """The angle of each image's bright pixel about the centre, in degrees (the spot of :func:`spot`)."""
    rows, columns = landing(images)
    centre = (images.shape[-1] - 1) / 2
    return torch.rad2deg(torch.atan2(centre - rows, columns - centre))


def test_the_batch_versions_draw_v2s_crop_offsets_flip_rate_and_angles():
    images = copies(spot())
    crop = v2.RandomCrop(24, padding=3)
    expected, got = per_image(crop, images), batched(batch_version(crop), images)
    for axis in (0, 1):  # the spot's row and column: the crop's offsets along each axis
        assert ks_distance(landing(expected)[axis], landing(got)[axis]) < KS_LIMIT
    flip = v2.RandomHorizontalFlip(p=0.3)
    flipped = (landing(batched(batch_version(flip), images))[1] != 18).double()
    assert abs(flipped.mean().item() - 0.3) < 4 * (0.3 * 0.7 / DRAWS) ** 0.5
    rotation = v2.RandomRotation(30)
    expected, got = angles(per_image(rotation, images)), angles(batched(batch_version(rotation), images))
    assert ks_distance(expected, got) < KS_LIMIT
    assert ks_distance(expected, angles(batched(batch_version(v2.RandomRotation(20)), images))) > KS_LIMIT


def test_a_batch_version_gives_the_image_v2_gives_for_the_same_draw():
    images = copies(picture(), 8)
    for transform in (  # every draw the same: the warps themselves compared
        v2.RandomAffine((17, 17), scale=(1.1, 1.1), shear=(5, 5, 3, 3)),
        v2.RandomRotation((17, 17)),
        v2.RandomRotation((-30, -30), center=[3, 5], interpolation=v2.InterpolationMode.BILINEAR),
    ):
        torch.testing.assert_close(batched(batch_version(transform), images)[0], per_image(transform, images)[0])


def preset_augmentation(preset: str) -> BatchAugmentation:
    path = Path(__file__).resolve().parents[1] / "project" / "configs" / "modifiers" / f"{preset}.yaml"
    return BatchAugmentation(Augmentation(**yaml.safe_load(path.read_text())["data"]["init_args"]["augment"]), seed=0)


@pytest.mark.parametrize("preset", ["augment", "augment_digits", "augment_finetune"])
def test_the_presets_run_as_whole_batches(preset):
    assert all(batched for batched, _ in preset_augmentation(preset).steps)


def test_transforms_without_a_batch_version_run_per_image_and_are_named_once(caplog):
    blur = {"class_path": "GaussianBlur", "init_args": {"kernel_size": 3}}
    options = Augmentation(["RandomHorizontalFlip", blur, "RandomGrayscale", "RandomVerticalFlip"])
    augmentation = BatchAugmentation(options, seed=0)
    assert [batched for batched, _ in augmentation.steps] == [True, False, True]  # the two run per image together
    with caplog.at_level(logging.INFO):
        augmentation.try_on((3, 16, 16))
        augmentation.try_on((3, 16, 16))
    notes = [record.getMessage() for record in caplog.records if "run on each image on its own" in record.getMessage()]
    assert notes == [
        "note: data.augment.transforms: GaussianBlur, RandomGrayscale run on each image on its own (no batch version, "
        "or options it does not take): slower than the others (docs/augmentation.md)"
    ]
    out, _ = augmentation.seeded(torch.rand(6, 3, 16, 16), torch.zeros(6), seed=5)
    assert out.shape == (6, 3, 16, 16)
    for options_it_does_not_take in (
        v2.RandomRotation(10, fill=[0.1, 0.2, 0.3]),  # a fill per channel
        v2.RandomAffine(10, interpolation=v2.InterpolationMode.BICUBIC),
        v2.RandomCrop(16, padding=2, padding_mode="symmetric"),
        v2.ColorJitter(hue=0.1),
    ):
        assert batch_version(options_it_does_not_take) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_batches_are_augmented_on_the_gpu_they_are_on():
    augmentation = preset_augmentation("augment_finetune")
    augmentation.mix_with("multiclass", 10)
    images, labels = torch.rand(8, 3, 224, 224, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    out, targets = augmentation.seeded(images, labels, seed=3)
    assert out.device.type == "cuda" and out.shape == images.shape and targets.shape == (8, 10)
    torch.testing.assert_close(augmentation.seeded(images, labels, seed=3)[0], out)


def test_the_benchmark_measures_both_ways_on_a_preset():
    path = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_augment.py"
    spec = importlib.util.spec_from_file_location("benchmark_augment", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.preset_options("augment_finetune", 28)["transforms"][0]["init_args"]["size"] == 28
    per_image_rate, batch_rate = benchmark.measure("augment_finetune", (1, 28, 28), 8, 1, torch.device("cpu"))
    assert per_image_rate > 0 and batch_rate > 0
