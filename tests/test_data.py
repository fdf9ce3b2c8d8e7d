"""The MNIST data module: where the files are looked for, the seeded split, normalisation, missing files, and the
pieces every data module is given (their mappings, and how few arguments each module adds of its own)."""

import inspect
from pathlib import Path

import pytest
import torch
from torchvision import datasets

from project.data import DATA_DIR_ENV, ImageDataModule, Labels, Loading, MNISTDataModule, Split, resolve_data_dir
from project.errors import DataNotFoundError, UserInputError


def test_data_dir_comes_from_the_argument_then_the_environment_then_dot_data(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, "/from/env")
    assert resolve_data_dir("/from/arg") == Path("/from/arg")
    assert resolve_data_dir(None) == Path("/from/env")
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir(None) == Path("data")


def test_split_is_fixed_by_its_seed_not_by_the_global_seed(fake_data_dir):
    def val_indices(split_seed: int, global_seed: int) -> list[int]:
        torch.manual_seed(global_seed)
        data = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100, split_seed=split_seed))
        data.setup("fit")
        assert (len(data.train_set), len(data.val_set)) == (500, 100)
        return list(data.val_set.indices)

    assert val_indices(split_seed=1, global_seed=0) == val_indices(split_seed=1, global_seed=123)
    assert val_indices(split_seed=1, global_seed=0) != val_indices(split_seed=2, global_seed=0)


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "DataLoader"])
def test_images_are_normalised_with_the_training_images_mean_and_std(fake_data_dir, in_memory):
    data = MNISTDataModule(data_dir=str(fake_data_dir), loading=Loading(in_memory=in_memory))
    data.setup("test")
    pixels, _ = data.test_set[0]
    assert pixels.dtype == torch.uint8  # what the loaders carry; normalised once, on the training device
    images, _ = next(data.normalised_batches("test"))
    train_pixels = datasets.MNIST(str(fake_data_dir), train=True).data.float() / 255
    mean, std = train_pixels.mean().item(), train_pixels.std().item()
    assert data.mean_std == pytest.approx((mean, std))
    raw = datasets.MNIST(str(fake_data_dir), train=False).data[0].float() / 255
    assert images.shape[1:] == (1, 28, 28)
    torch.testing.assert_close(images[0, 0], (raw - mean) / std)


def test_batches_have_the_configured_sizes(fake_data_dir):
    data = MNISTDataModule(
        data_dir=str(fake_data_dir), batch_size=32, split=Split(val_size=100), loading=Loading(eval_batch_size=64)
    )
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and labels.dtype == torch.int64
    assert next(iter(data.val_dataloader()))[0].shape[0] == 64


def test_val_size_that_leaves_no_training_images_is_refused(fake_data_dir):
    data = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=600))
    with pytest.raises(
        UserInputError, match=r"data.split.val_size=600 leaves no images on one side: the split has 600 images"
    ):
        data.setup("fit")


def test_bad_batch_size_is_refused_by_name():
    with pytest.raises(UserInputError, match=r"data.batch_size must be a positive integer, got 0"):
        MNISTDataModule(batch_size=0)


def test_missing_files_offline_give_one_clear_message(tmp_path, monkeypatch):
    # Point the download at a closed local port: fails at once, as it does without network.
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    data = MNISTDataModule(data_dir=str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError) as caught:
        data.prepare_data()
    message = str(caught.value)
    assert f"looked in {(tmp_path / 'empty' / 'MNIST' / 'raw').resolve()}" in message
    assert "train-images-idx3-ubyte" in message and "the download failed" in message
    assert "--data.data_dir" in message and DATA_DIR_ENV in message
    assert "Tried http" not in message  # not torchvision's list of mirrors


def test_missing_files_with_download_off_say_so(tmp_path):
    data = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError, match=r"downloading is switched off \(data.download\)"):
        data.prepare_data()


def test_real_mnist_splits_into_55000_5000_and_10000(real_data_dir):
    data = MNISTDataModule(data_dir=str(real_data_dir))
    data.prepare_data()  # files present: no download attempted
    data.setup("fit")
    data.setup("test")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (55_000, 5_000, 10_000)
    test_counts = torch.bincount(data.test_set.targets, minlength=10).tolist()
    assert test_counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("in_memory", [True, False])
def test_only_classes_keeps_those_classes_numbered_in_the_order_given(fake_data_dir, in_memory):
    data = MNISTDataModule(
        data_dir=str(fake_data_dir),
        split=Split(val_size=0.1),
        labels=Labels(only_classes=[7, 5]),
        loading=Loading(in_memory=in_memory),
    )
    data.setup("fit")
    raw = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=0.1), loading=Loading(in_memory=False))
    raw.setup("fit")
    full_test = torch.tensor([int(target) for _, target in raw.test_set])
    assert data.num_outputs == 2 and data.class_names == ["7", "5"]
    test_targets = torch.cat([targets for _, targets in data.test_dataloader()])
    assert test_targets.tolist() == [{7: 0, 5: 1}[int(t)] for t in full_test if t in (5, 7)]
    train_targets = torch.cat(
        [targets for _, targets in data.val_dataloader()] + [t for _, t in data.train_dataloader()]
    )
    expected = sum(int(t in (5, 7)) for _, t in datasets.MNIST(str(fake_data_dir), train=True))
    assert len(train_targets) == expected and set(train_targets.tolist()) == {0, 1}


def test_only_classes_that_are_not_classes_of_the_data_are_refused(fake_data_dir):
    with pytest.raises(
        UserInputError, match=r"data.labels.only_classes \[3, 12\] must name 2 or more different classes"
    ):
        MNISTDataModule(data_dir=str(fake_data_dir), labels=Labels(only_classes=[3, 12])).setup("fit")
    with pytest.raises(UserInputError, match="exclude each other"):
        MNISTDataModule(data_dir=str(fake_data_dir), labels=Labels(only_classes=[3, 4], positive_classes=[3]))


def test_a_piece_given_as_a_mapping_keeps_the_modules_defaults_for_what_it_leaves_out(fake_data_dir):
    data = MNISTDataModule(data_dir=str(fake_data_dir), split={"split_seed": 3})
    assert data.split == Split(val_size=5000, split_seed=3)  # MNIST's 5,000, not the class's 10%
    assert data.hparams["split"]["val_size"] == 5000  # recorded whole, as resolved
    with pytest.raises(UserInputError, match=r"^data.split has no option 'val_siz': its options are val_size, "):
        MNISTDataModule(data_dir=str(fake_data_dir), split={"val_siz": 100})
    with pytest.raises(UserInputError, match=r"^data.labels must be a Labels or a mapping of class_names, "):
        MNISTDataModule(data_dir=str(fake_data_dir), labels=[5, 6])


SHARED = {"data_dir", "batch_size", "split", "labels", "augment", "loading"}
"""The arguments every data module shares: the data directory, the batch size and the four pieces."""


def own_arguments(cls: type) -> set[str]:
    """The arguments ``cls`` takes beyond :data:`SHARED`: its constructor's and its parents' (through ``**kwargs``)."""
    names: set[str] = set()
    for klass in cls.__mro__[: cls.__mro__.index(ImageDataModule)]:
        if "__init__" in vars(klass):
            parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
            names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - SHARED


def test_every_data_module_takes_few_arguments_of_its_own_beside_the_shared_pieces():
    import project.data as data

    modules = [value for value in vars(data).values() if isinstance(value, type) and value.__name__.endswith("Module")]
    counts = {cls.__name__: len(own_arguments(cls)) for cls in modules if cls is not data.ImageDataModule}
    assert len(counts) == 10 and max(counts.values()) <= 8, counts
    assert own_arguments(data.ArrayDataModule) == {"train_images", "train_labels", "test_images", "test_labels",
                                                   "npz", "num_classes", "mean", "std"}  # fmt: skip
    assert set(list(inspect.signature(data.ImageDataModule.__init__).parameters)[1:]) == SHARED
