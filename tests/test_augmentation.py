"""Augmentation from the config (``data.augment``: its ``transforms``, ``shift``, ``mixup_alpha``, ``cutmix_alpha``):
every kind of transform on both data paths, each image its own draw on the 0..1 scale before the one normalisation,
training batches only, MixUp / CutMix targets for the multiclass loss, only allowed classes built, and exact resume
with augmentation on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import Interrupted, RecordLR, bound_task, cli_error, quiet_trainer
from test_arrays import EXACT_RESUME_SETTINGS, write_arrays, write_recipe
from test_cli import print_config
from test_reliability import assert_same_training_state
from torchvision.transforms import v2

from project.cli import run_cli
from project.data import Augmentation, Loading, Split, TensorDataModule
from project.data.augment import BatchAugmentation, batch_seed
from project.data.in_memory import normalised
from project.errors import UserInputError

KINDS: dict[str, Any] = {
    "random-resized crop": {"class_path": "RandomResizedCrop", "init_args": {"size": 16, "scale": [0.3, 1.0]}},
    "flip": "RandomHorizontalFlip",
    "rotation": {"class_path": "RandomRotation", "init_args": {"degrees": 30}},
    "RandAugment": "RandAugment",
    "TrivialAugmentWide": "TrivialAugmentWide",
    "random erasing": {"class_path": "torchvision.transforms.v2.RandomErasing", "init_args": {"p": 1.0}},
}


def lopsided(count: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """``count`` copies of one 16x16 uint8 image that no flip, crop or rotation leaves as it is, and labels 0..3."""
    image = np.zeros((16, 16), dtype=np.uint8)
    image[2:9, 1:6] = 250
    image[10:14, 3:15] = 120
    image += np.arange(16, dtype=np.uint8)[None, :] * 3
    return np.repeat(image[None], count, axis=0), np.arange(count) % 4


def data_module(in_memory: bool, **options: Any) -> TensorDataModule:
    """Copies of one image, as a data module on either path, set up for fitting under a CPU trainer in training;
    ``options`` are those of its augmentation (:class:`~project.data.Augmentation`)."""
    images, labels = lopsided()
    split, loading = Split(val_size=10, shuffle_seed=3), Loading(in_memory=in_memory)
    data = TensorDataModule(
        images, labels, batch_size=20, split=split, loading=loading, augment=Augmentation(**options)
    )
    data.trainer = quiet_trainer()
    data.setup("fit")
    data.trainer.training = True
    return data


def first_batch(data: TensorDataModule, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = next(iter(loader))
    return images, torch.as_tensor(targets)


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "DataLoader"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_transform_draws_its_own_parameters_for_every_image_on_both_paths(kind, in_memory):
    data = data_module(in_memory, transforms=[KINDS[kind]])
    images, targets = first_batch(data, data.train_dataloader())
    before = torch.get_rng_state()
    augmented, same_targets = data.on_after_batch_transfer((images, targets), 0)
    assert torch.equal(torch.get_rng_state(), before)  # the training loop's generator is untouched
    assert augmented.shape == images.shape and torch.equal(same_targets, targets)
    assert not torch.allclose(augmented, data.network_batch((images, targets), augment=False)[0])
    distinct = torch.unique(augmented.flatten(1).round(decimals=4), dim=0)
    assert len(distinct) > 1  # identical images in, different images out: one draw per image, not per batch


def test_both_paths_augment_a_batch_alike():
    spec = [KINDS["random-resized crop"], KINDS["flip"], KINDS["TrivialAugmentWide"]]
    fast, slow = data_module(True, transforms=spec), data_module(False, transforms=spec)
    fast_batch, slow_batch = first_batch(fast, fast.train_dataloader()), first_batch(slow, slow.train_dataloader())
    torch.testing.assert_close(fast_batch, slow_batch)
    augmented = [data.on_after_batch_transfer(batch, 0) for data, batch in ((fast, fast_batch), (slow, slow_batch))]
    torch.testing.assert_close(augmented[0], augmented[1], atol=1e-4, rtol=0)


def test_only_training_batches_are_augmented():
    data = data_module(True, transforms=[KINDS["random erasing"]], mixup_alpha=0.4)
    for stage, loader in (("validating", data.val_dataloader), ("testing", data.test_dataloader),
                          ("predicting", data.predict_dataloader)):  # fmt: skip
        setattr(data.trainer, stage, True)
        batch = first_batch(data, loader())
        images, targets = data.on_after_batch_transfer(batch, 0)
        unaugmented = normalised(batch[0], *data.normalisation_on(batch[0].device))
        assert torch.equal(images, unaugmented) and torch.equal(targets, batch[1]), stage
    data.trainer.training = True
    images, targets = data.on_after_batch_transfer(first_batch(data, data.train_dataloader()), 0)
    assert targets.shape == (20, 4) and torch.allclose(targets.sum(dim=1), torch.ones(20))  # mixed: probabilities


def test_processes_of_a_ddp_run_draw_different_augmentations():
    seeds = [batch_seed(torch.Generator().manual_seed(3), rank) for rank in (0, 1)]
    assert seeds[0] != seeds[1]
    augmentation = BatchAugmentation(Augmentation([KINDS["rotation"]]), seed=0)
    images = torch.from_numpy(lopsided(4)[0]).float().div(255)[:, None]
    by_rank = [augmentation.seeded(images, torch.zeros(4), seed)[0] for seed in seeds]
    assert not torch.allclose(by_rank[0], by_rank[1])
    torch.testing.assert_close(augmentation.seeded(images, torch.zeros(4), seeds[0])[0], by_rank[0])  # seeds repeat


def test_mixed_targets_train_with_label_smoothing_and_count_as_their_largest_class():
    task = bound_task("multiclass", 3, label_smoothing=0.1)
    outputs, soft = torch.randn(5, 3), torch.tensor([[0.7, 0.3, 0.0]] * 5)
    expected = F.cross_entropy(outputs, soft, label_smoothing=0.1)
    torch.testing.assert_close(task.loss(outputs, soft), expected)
    assert task.metric_targets(soft).tolist() == [0] * 5
    assert task.metric_targets(torch.tensor([2, 1])).tolist() == [2, 1]  # hard labels stay as they are


def test_mixed_targets_with_class_weights_keep_the_loss_on_the_scale_of_class_indices():
    task = bound_task("multiclass", 3, class_weights=[1.0, 5.0, 10.0], label_smoothing=0.1)
    outputs, targets = torch.randn(8, 3), torch.tensor([0, 1, 2, 2, 1, 0, 2, 1])
    one_hot = F.one_hot(targets, 3).float()
    torch.testing.assert_close(task.loss(outputs, one_hot), task.loss(outputs, targets))
    mixed = 0.6 * one_hot + 0.4 * one_hot.roll(1, dims=0)  # MixUp of each example with its neighbour
    shares = mixed @ torch.tensor([1.0, 5.0, 10.0])
    torch.testing.assert_close(task.loss(outputs, mixed), task.example_losses(outputs, mixed).sum() / shares.sum())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"transforms": ["os.system"]}, "data.augment.transforms[0]: os.system is not allowed here: use a class of "),
        ({"transforms": ["torch.nn.Identity"]}, "data.augment.transforms[0]: torch.nn.Identity is not allowed here"),
        (
            {"transforms": ["MixUp"]},
            "data.augment.transforms[0]: MixUp is not for data.augment.transforms: use data.augment.mixup_alpha",
        ),
        ({"transforms": ["Normalize"]}, "converts and normalises the images itself"),
        ({"transforms": [{"class_path": "RandomRotation"}]}, "RandomRotation({}) cannot be built"),
        ({"transforms": [{"class_path": "RandomCrop", "args": {}}]}, "give a class name or {class_path"),
        ({"transforms": "RandomCrop"}, "data.augment.transforms must be a list of transforms"),
        ({"mixup_alpha": -1}, "data.augment.mixup_alpha must be 0 (off) or a positive number"),
        ({"shift": -1}, "data.augment.shift must be 0 or more pixels, got -1"),
        (
            {"transforms": [{"class_path": "RandomApply", "init_args": {"transforms": ["os.system"]}}]},
            "data.augment.transforms[0].transforms[0]: os.system is not allowed here",
        ),
    ],
    ids=[
        "a function",
        "another library's class",
        "mixup in the list",
        "normalize",
        "bad arguments",
        "bad keys",
        "not a list",
        "negative alpha",
        "negative shift",
        "a function inside RandomApply",
    ],
)
def test_what_the_config_names_is_refused_in_one_line_unless_allowed(options, message):
    with pytest.raises(UserInputError) as caught:
        TensorDataModule(*lopsided(), augment=Augmentation(**options))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UserInputError, match=re.escape(message)):
        TensorDataModule(*lopsided(), augment=options)  # a mapping of the options, as a checkpoint records them


class Darken(v2.Transform):
    """A transform of one's own (its module imported, as a trusted module is): allowed by its import path."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return inpt * 0.5


def test_a_transform_of_ones_own_already_imported_is_built():
    augmentation = BatchAugmentation(Augmentation([f"{__name__}.Darken"]), seed=0)
    assert isinstance(augmentation.transforms[0], Darken)


def test_transforms_of_transforms_are_built_from_their_entries():
    nested = {"class_path": "RandomApply", "init_args": {"transforms": ["RandomHorizontalFlip"], "p": 0.5}}
    augmentation = BatchAugmentation(Augmentation([nested]), seed=0)
    assert isinstance(augmentation.transforms[0].transforms[0], v2.RandomHorizontalFlip)
    data = TensorDataModule(*lopsided(), augment=Augmentation(transforms=[nested]))
    data.setup("fit")  # the shape check runs the nested transform


def test_a_transform_that_resizes_the_images_is_refused_when_the_data_is_set_up():
    data = TensorDataModule(
        *lopsided(), augment=Augmentation(transforms=[{"class_path": "Resize", "init_args": {"size": 20}}])
    )
    with pytest.raises(UserInputError, match=r"turn images of shape \(1, 16, 16\) .* into \(1, 20, 20\)"):
        data.setup("fit")


def crop(**init_args: Any) -> dict[str, Any]:
    return {"class_path": "RandomCrop", "init_args": {"size": 16, **init_args}}


T = "data.augment.transforms"


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ([crop(padding=-2)], f"{T}[0]: RandomCrop cannot apply to these training images ((1, 16, 16)"),
        ([{"class_path": "JPEG", "init_args": {"quality": 50}}], f"{T}[0]: JPEG is not for {T}: it compresses uint8 "
         f"images, and {T} see float images"),
        (["RandomHorizontalFlip", "RandomIoUCrop"], f"{T}[1]: RandomIoUCrop is not for {T}: it acts on bounding boxes"),
        ([{"class_path": "Lambda", "init_args": {"lambd": "print"}}], f"Lambda is not for {T}: its function would be "
         "code"),
        ([{"class_path": "Compose", "init_args": {"transforms": "RandomHorizontalFlip"}}], f"{T}[0]: Compose's "
         "transforms must be a list of transforms"),
        ([{"class_path": "GaussianBlur", "init_args": {"kernel_size": 41}}], f"{T}[0]: GaussianBlur has a kernel of "
         "[41, 41] pixels, larger than the images (16x16)"),
        ([{"class_path": "RandomApply", "init_args": {"transforms": [{"class_path": "GaussianBlur", "init_args": {
            "kernel_size": 17}}]}}], f"{T}[0]: GaussianBlur has a kernel of [17, 17] pixels"),
        ([crop(), {"class_path": "RandomSolarize", "init_args": {"threshold": 128}}], f"{T}[1]: RandomSolarize cannot "
         "apply to these training images"),
        ([{"class_path": "FiveCrop", "init_args": {"size": 8}}], f"{T}[0]: FiveCrop gives back a tuple, not an image"),
    ],
    ids=["negative padding", "JPEG", "boxes", "Lambda", "Compose of a string", "blur larger than the image",
         "blur inside RandomApply", "uint8 threshold", "several crops"],
)  # fmt: skip
def test_a_transform_that_cannot_apply_to_the_training_images_is_named_before_training(augment, message):
    with pytest.raises(UserInputError) as caught:
        TensorDataModule(*lopsided(), augment=Augmentation(transforms=augment)).setup("fit")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_colour_transforms_torchvision_defines_on_float_images_are_accepted_and_change_them():
    """The transforms see float32 pixels on the 0..1 scale (recorded by a transform of one's own), where torchvision's
    posterize keeps 2**bits levels, equalize goes through uint8 and solarize takes a threshold on that scale."""
    augment = [
        f"{__name__}.RecordInput",
        {"class_path": "RandomPosterize", "init_args": {"bits": 2, "p": 1.0}},
        {"class_path": "RandomSolarize", "init_args": {"threshold": 0.5, "p": 1.0}},
        {"class_path": "RandomEqualize", "init_args": {"p": 1.0}},
        {"class_path": "GaussianBlur", "init_args": {"kernel_size": 5}},
    ]
    RecordInput.seen.clear()
    for in_memory in (True, False):
        data = data_module(in_memory, transforms=augment)
        images, targets = first_batch(data, data.train_dataloader())
        augmented, _ = data.on_after_batch_transfer((images, targets), 0)
        assert not torch.allclose(augmented, data.network_batch((images, targets), augment=False)[0])
    assert {(dtype, low >= 0 and high <= 1) for dtype, low, high in RecordInput.seen} == {(torch.float32, True)}


class RecordInput(v2.Transform):
    """A transform of one's own that records the dtype and range of every image it is given, and changes nothing."""

    seen: ClassVar[list[tuple[torch.dtype, float, float]]] = []

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        RecordInput.seen.append((inpt.dtype, inpt.min().item(), inpt.max().item()))
        return inpt


def test_a_transform_that_fails_through_the_command_line_is_one_line_before_any_file(tmp_path, capsys, monkeypatch):
    recipe = write_recipe(write_arrays(tmp_path / "arrays"), augment={"transforms": [crop(padding=-2)]})
    monkeypatch.chdir(tmp_path)
    error = cli_error(["fit", f"--config={recipe}", "--trainer.max_steps=2"], capsys, root=tmp_path)
    assert "data.augment.transforms[0]: RandomCrop cannot apply" in error and "ValueError: Required crop size" in error


def test_mixup_is_refused_for_a_task_that_is_not_multiclass_before_training(tmp_path, capsys, monkeypatch):
    recipe = write_recipe(
        write_arrays(tmp_path / "arrays"), labels={"positive_classes": [1]}, augment={"cutmix_alpha": 1.0}
    )
    monkeypatch.chdir(tmp_path)
    error = cli_error(["fit", f"--config={recipe}", "--trainer.max_steps=2"], capsys)
    assert (
        "data.augment.cutmix_alpha 1: MixUp and CutMix mix class labels, for multiclass tasks only (this is binary)"
        in error
    )


AUGMENTED = {
    "shift": 1,
    "transforms": [  # batch versions, and one that runs per image (a random blur)
        {"class_path": "RandomResizedCrop", "init_args": {"size": 16, "scale": [0.5, 1.0]}},
        "RandAugment",
        {"class_path": "GaussianBlur", "init_args": {"kernel_size": 3, "sigma": [0.1, 2.0]}},
    ],
    "mixup_alpha": 0.4,
    "cutmix_alpha": 1.0,
}


@pytest.mark.parametrize(
    "in_memory", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["in memory", "through a DataLoader"]
)
def test_a_resumed_augmented_run_equals_an_uninterrupted_one(in_memory, tmp_path, monkeypatch):
    settings = EXACT_RESUME_SETTINGS
    arrays = write_arrays(tmp_path / "arrays")
    recipe = write_recipe(arrays, settings, batch_size=20, loading={"in_memory": in_memory}, augment=AUGMENTED)
    args = ["fit", f"--config={recipe}", "--test_after_fit=false"]  # 5 steps per epoch, 10 in all
    for name in ("straight", "resumed"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    straight = run_cli(args)
    assert "train/acc" in straight.trainer.callback_metrics  # the metrics took the mixed targets' classes
    monkeypatch.chdir(tmp_path / "resumed")
    with pytest.raises(Interrupted):  # after step 9; last.ckpt holds step 8, 3 batches into the second epoch
        run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=9"])
    resumed = run_cli([*args, "--ckpt_path=last", "--trainer.callbacks+=helpers.RecordLR"])
    recorder = next(callback for callback in resumed.trainer.callbacks if isinstance(callback, RecordLR))
    assert sorted(recorder.by_step) == [8, 9]
    last = Path("logs") / "arrays" / "version_0" / "checkpoints" / "last.ckpt"
    assert_same_training_state(tmp_path / "straight" / last, tmp_path / "resumed" / last)
    fresh = torch.Generator().manual_seed(straight.datamodule.shuffle_seed).get_state()
    assert not torch.equal(straight.datamodule.augmentation.generator.get_state(), fresh)  # seeds were drawn from it


@pytest.mark.parametrize(
    ("preset", "shape", "mixes"),
    [
        ("augment", (1, 28, 28), False),
        ("augment_digits", (1, 28, 28), False),
        ("augment_finetune", (3, 224, 224), True),
    ],
)
def test_the_presets_build_and_keep_their_images_size(preset, shape, mixes):
    path = Path(__file__).resolve().parents[1] / "project" / "configs" / "modifiers" / f"{preset}.yaml"
    options = yaml.safe_load(path.read_text())["data"]["init_args"]["augment"]
    augmentation = BatchAugmentation(Augmentation(**options), seed=0)
    augmentation.try_on(shape)
    assert augmentation.mixes == mixes


def test_the_fashion_preset_stacks_on_the_fine_tuning_recipe():
    data = print_config("--config=finetune_fashion_mnist", "--config=augment")["data"]["init_args"]
    assert data["dataset"] == "fashion_mnist"
    assert [spec if isinstance(spec, str) else spec["class_path"] for spec in data["augment"]["transforms"]] == [
        "RandomCrop",
        "RandomHorizontalFlip",
        "RandomErasing",
    ]
