"""Data: where the files live, and the LightningDataModules that turn them into batches.

The data directory comes from ``--data.data_dir``, else the ``PROJECT_DATA_DIR`` environment variable, else
``./data``. Inside it the files use torchvision's own layout (``MNIST/raw/train-images-idx3-ubyte`` ...), so a folder
that torchvision downloaded into works as it is.

- :mod:`project.data.base`: :class:`ImageDataModule`, what every data module shares, given as pieces: how its
  examples are split and sampled (:class:`Split`, :mod:`project.data.splits`), how labels become targets
  (:class:`Labels`, :mod:`project.data.labels`), how training batches are augmented (:class:`Augmentation`,
  :mod:`project.data.augment`) and how batches are loaded (:class:`Loading`, :mod:`project.data.loading`); the
  training order that resumes exactly (:mod:`project.data.sampler`), and its arguments, recorded
  (:mod:`project.data.recording`);
- :mod:`project.data.torchvision_family`: :class:`MNISTDataModule` for MNIST and its relatives;
- :mod:`project.data.rotation`: :class:`RotationDataModule`, a regression task on real images;
- :mod:`project.data.files`: a user's own images: :class:`ImageFolderDataModule`, :class:`CSVRegressionDataModule`,
  :class:`CSVMultilabelDataModule`, decoded once by :mod:`project.data.decoding` and kept as :class:`DecodedImages`
  says, or read from litdata chunks of them in a folder or object storage (:class:`Streamed`,
  :mod:`project.data.streaming`);
- :mod:`project.data.arrays`: a user's own arrays: :class:`ArrayDataModule` (``.npy`` / ``.npz`` files),
  :class:`TensorDataModule` (numpy arrays or tensors built in Python);
- :mod:`project.data.datasets`: :class:`DatasetDataModule`, any ``torch.utils.data.Dataset`` of a user's own;
- :mod:`project.data.text`: :class:`TextDataModule`, labelled texts (CSV, JSON Lines, a folder per class), and
  :mod:`project.data.text_corpus`: :class:`TextCorpusDataModule`, raw text for pretraining, tokenised once into a
  cache on disk (:mod:`project.data.token_cache`) and masked BERT's way (:mod:`project.data.masking`); where their
  texts and tokenizer come from: :mod:`project.data.text_sources`.
"""

from project.data.arrays import ArrayDataModule, TensorDataModule
from project.data.augment import Augmentation
from project.data.base import DATA_DIR_ENV, ImageDataModule, resolve_data_dir
from project.data.datasets import DatasetDataModule
from project.data.file_images import DecodedImages
from project.data.files import CSVMultilabelDataModule, CSVRegressionDataModule, ImageFolderDataModule
from project.data.labels import Labels
from project.data.loading import Loading
from project.data.rotation import RotationDataModule
from project.data.splits import Split, few_shot_indices
from project.data.streaming import Streamed
from project.data.text import TextDataModule
from project.data.text_corpus import TextCorpusDataModule
from project.data.torchvision_family import TORCHVISION_DATASETS, MNISTDataModule

__all__ = [
    "DATA_DIR_ENV",
    "TORCHVISION_DATASETS",
    "ArrayDataModule",
    "Augmentation",
    "CSVMultilabelDataModule",
    "CSVRegressionDataModule",
    "DatasetDataModule",
    "DecodedImages",
    "ImageDataModule",
    "ImageFolderDataModule",
    "Labels",
    "Loading",
    "MNISTDataModule",
    "RotationDataModule",
    "Split",
    "Streamed",
    "TensorDataModule",
    "TextCorpusDataModule",
    "TextDataModule",
    "few_shot_indices",
    "resolve_data_dir",
]
