"""Task datasets: MNIST's relatives in their real file formats, image folders, CSV regression, few-shot, binary."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import write_image_folder
from idx import write_torchvision_dataset
from PIL import Image

from project.data import TORCHVISION_DATASETS, Labels, MNISTDataModule, RotationDataModule, Split, few_shot_indices
from project.data.files import CSVRegressionDataModule, ImageFolderDataModule
from project.errors import DataNotFoundError, UserInputError


@pytest.mark.parametrize("name", sorted(TORCHVISION_DATASETS))
def test_each_torchvision_dataset_loads_from_its_real_file_format(name, tmp_path):
    write_torchvision_dataset(tmp_path, name, train_count=300, test_count=100)
    data = MNISTDataModule(dataset=name, data_dir=str(tmp_path), download=False, split=Split(val_size=50))
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    images, _ = next(iter(data.train_dataloader()))
    test_labels = torch.cat([labels for _, labels in data.test_dataloader()])
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (250, 50, 100)
    assert images.shape[1:] == (1, 28, 28)  # USPS's 16x16 images are resized
    assert test_labels.min() == 0 and test_labels.max() == data.num_classes - 1  # EMNIST letters start at 0 here
    assert data.num_classes == {"emnist_letters": 26, "emnist_balanced": 47}.get(name, 10)


def test_emnist_images_are_turned_upright(tmp_path):
    write_torchvision_dataset(tmp_path, "emnist_letters")
    data = MNISTDataModule(dataset="emnist_letters", data_dir=str(tmp_path), download=False)
    data.setup("test")
    stored = data.torchvision_dataset(train=False).data[0]
    served, _ = data.test_set[0]  # uint8 pixels, as every path hands them over
    assert torch.equal(served[0], stored.T)
    images, _ = next(data.normalised_batches("test"))
    torch.testing.assert_close(images[0, 0], (stored.T.float() / 255 - data.mean_std[0]) / data.mean_std[1])


def test_missing_dataset_files_name_the_dataset_folder(tmp_path):
    data = MNISTDataModule(dataset="kmnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError, match=r"KMNIST files not found: looked in .*KMNIST/raw"):
        data.prepare_data()


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(UserInputError, match=r"data.dataset 'cifar10' is not known: use one of mnist, fashion_mnist"):
        MNISTDataModule(dataset="cifar10")


def test_fashion_mnist_real_files(real_data_dir):
    data = MNISTDataModule(dataset="fashion_mnist", data_dir=str(real_data_dir), download=False)
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (55_000, 5_000, 10_000)
    assert torch.bincount(data.test_set.targets).tolist() == [1000] * 10
    assert data.mean_std == pytest.approx((0.2860, 0.3530), abs=1e-3)


# -- few-shot subsets --------------------------------------------------------------------------------------------


def test_samples_per_class_is_stratified_seeded_and_nested():
    labels = torch.arange(1000) % 10
    ten = few_shot_indices(labels, samples_per_class=10, train_fraction=None, seed=3)
    fifty = few_shot_indices(labels, samples_per_class=50, train_fraction=None, seed=3)
    assert torch.bincount(labels[ten]).tolist() == [10] * 10
    assert set(ten.tolist()) <= set(fifty.tolist())  # more labels per class see a superset
    assert ten.tolist() == few_shot_indices(labels, 10, None, seed=3).tolist()
    assert ten.tolist() != few_shot_indices(labels, 10, None, seed=4).tolist()


def test_train_fraction_keeps_that_share_of_every_class():
    labels = torch.cat([torch.zeros(100), torch.ones(300)]).long()
    kept = few_shot_indices(labels, samples_per_class=None, train_fraction=0.1, seed=0)
    assert torch.bincount(labels[kept]).tolist() == [10, 30]


def test_few_shot_applies_to_the_training_split_only(fake_data_dir):
    data = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100, samples_per_class=5))
    data.setup("fit")
    data.setup("test")
    train_labels = torch.tensor([label for _, label in data.train_set])
    assert torch.bincount(train_labels).tolist() == [5] * 10
    assert (len(data.val_set), len(data.test_set)) == (100, 200)


def test_more_samples_per_class_than_a_class_has_is_refused(fake_data_dir):
    data = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100, samples_per_class=500))
    with pytest.raises(
        UserInputError, match=r"data.split.samples_per_class=500, but class \d has only \d+ training images"
    ):
        data.setup("fit")


# -- binary rules and regression -----------------------------------------------------------------------------------


def test_positive_classes_make_a_binary_task(fake_data_dir):
    data = MNISTDataModule(
        data_dir=str(fake_data_dir), split=Split(val_size=100), labels=Labels(positive_classes=[5, 6, 7, 8, 9])
    )
    assert (data.task, data.num_outputs) == ("binary", 1)
    data.setup("test")
    original = MNISTDataModule(data_dir=str(fake_data_dir))
    original.setup("test")
    for index in range(20):
        assert data.test_set[index][1] == int(original.test_set[index][1] >= 5)


def test_positive_classes_outside_the_data_are_refused(fake_data_dir):
    data = MNISTDataModule(data_dir=str(fake_data_dir), labels=Labels(positive_classes=[3, 12]))
    with pytest.raises(
        UserInputError, match=r"data.labels.positive_classes \[12\] are not classes of this data: use values in 0..9"
    ):
        data.setup("fit")


def test_rotation_regression_targets_are_the_applied_angle(fake_data_dir):
    data = RotationDataModule(data_dir=str(fake_data_dir), max_angle=30.0, split=Split(val_size=100))
    assert (data.task, data.num_outputs) == ("regression", 1)
    data.setup("test")
    plain = MNISTDataModule(data_dir=str(fake_data_dir))
    plain.setup("test")
    image, target = data.test_set[3]
    assert -1 <= target <= 1 and image.shape == (1, 28, 28)
    assert not torch.equal(image, plain.test_set[3][0])
    assert data.test_set[3][1] == target  # the same angle every time


# -- a user's image folder and CSV ---------------------------------------------------------------------------------


def test_image_folder_is_converted_to_the_backbone_input(image_folder):
    data = ImageFolderDataModule(
        data_dir=str(image_folder), channels=1, image_size=28, split=Split(val_size=0.1, test_size=0.2)
    )
    assert (data.classes, data.num_classes, data.task) == (["circle", "square", "triangle"], 3, "multiclass")
    data.setup("fit")
    data.setup("test")
    image, label = data.train_set[0]
    assert image.shape == (1, 28, 28) and 0 <= label < 3
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (86, 10, 24)


def test_image_folder_with_train_and_test_subfolders(tmp_path):
    write_image_folder(tmp_path / "train", {"cat": 12, "dog": 12})
    write_image_folder(tmp_path / "test", {"cat": 4, "dog": 4})
    data = ImageFolderDataModule(data_dir=str(tmp_path), channels=3, image_size=32, split=Split(val_size=4))
    assert (data.task, data.num_outputs) == ("binary", 1)  # two classes: binary, "dog" is the positive class
    data.setup("fit")
    data.setup("test")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (20, 4, 8)
    assert data.test_set[0][0].shape == (3, 32, 32)


def test_image_folder_with_an_empty_class_is_refused(tmp_path):
    write_image_folder(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "c").mkdir()
    data = ImageFolderDataModule(data_dir=str(tmp_path))
    with pytest.raises(UserInputError, match=r"class folder c has no image files"):
        data.setup("fit")


def test_csv_regression_reads_paths_and_numeric_targets(tmp_path):
    rows = []
    for i in range(30):
        Image.new("L", (16, 16), color=i * 8).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "target": i / 30})
    with (tmp_path / "train.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["image", "target"])
        writer.writeheader()
        writer.writerows(rows)
    data = CSVRegressionDataModule(data_dir=str(tmp_path), split=Split(val_size=3, test_size=6))
    assert (data.task, data.num_outputs) == ("regression", 1)
    data.setup("fit")
    data.setup("test")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (21, 3, 6)
    image, target = data.test_set[0]
    assert image.shape == (1, 28, 28) and isinstance(target, float)


def test_a_folder_is_normalised_per_channel_and_a_wrong_count_is_refused(tmp_path):
    from project.data.decoding import ImageConversion

    conversion = ImageConversion(channels=3, image_size=2, mean=[0.0, 0.5, 1.0], std=[1.0, 0.5, 0.25])
    white = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    assert conversion.normalise(white)[:, 0, 0].tolist() == [1.0, 1.0, 0.0]
    assert ImageConversion(channels=3, mean=0.5).mean == (0.5, 0.5, 0.5)  # one number: every channel
    with pytest.raises(UserInputError, match=r"data.mean takes one finite number, or one per channel \(3\), got"):
        ImageConversion(channels=3, mean=[0.5, 0.5])
    with pytest.raises(UserInputError, match=r"data.std must be positive, got \[1.0, 0.0, 1.0\]"):
        ImageConversion(channels=3, std=[1.0, 0.0, 1.0])
