"""Data: where the files live, and the LightningDataModules that turn them into batches.

The data directory comes from ``--data.data_dir``, else the ``PROJECT_DATA_DIR`` environment variable, else
``./data``. Inside it the files use torchvision's own layout (``MNIST/raw/train-images-idx3-ubyte`` ...), so a folder
that torchvision downloaded into works as it is.

- :mod:`project.data.base`: :class:`ImageDataModule`, what every data module shares (binary and multilabel label
  rules, loaders), with :mod:`project.data.splits` (seeded splits, few-shot subsets),
  :mod:`project.data.augment` (batch augmentation) and :mod:`project.data.recording` (its arguments, recorded);
- :mod:`project.data.torchvision_family`: :class:`MNISTDataModule` for MNIST and its relatives;
- :mod:`project.data.rotation`: :class:`RotationDataModule`, a regression task on real images;
- :mod:`project.data.files`: a user's own images: :class:`ImageFolderDataModule`, :class:`CSVRegressionDataModule`,
  :class:`CSVMultilabelDataModule`, decoded once by :mod:`project.data.decoding`;
- :mod:`project.data.arrays`: a user's own arrays: :class:`ArrayDataModule` (``.npy`` / ``.npz`` files),
  :class:`TensorDataModule` (numpy arrays or tensors built in Python);
- :mod:`project.data.datasets`: :class:`DatasetDataModule`, any ``torch.utils.data.Dataset`` of a user's own.
"""

from project.data.arrays import ArrayDataModule, TensorDataModule
from project.data.base import DATA_DIR_ENV, ImageDataModule, resolve_data_dir
from project.data.datasets import DatasetDataModule
from project.data.files import CSVMultilabelDataModule, CSVRegressionDataModule, ImageFolderDataModule
from project.data.rotation import RotationDataModule
from project.data.splits import few_shot_indices
from project.data.torchvision_family import TORCHVISION_DATASETS, MNISTDataModule

__all__ = [
    "DATA_DIR_ENV",
    "TORCHVISION_DATASETS",
    "ArrayDataModule",
    "CSVMultilabelDataModule",
    "CSVRegressionDataModule",
    "DatasetDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "RotationDataModule",
    "TensorDataModule",
    "few_shot_indices",
    "resolve_data_dir",
]
