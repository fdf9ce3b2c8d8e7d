"""Raw text for masked-language-model pretraining (:class:`TextCorpusDataModule`): text files of any size, tokenised
once into a cache on disk (:mod:`project.data.token_cache`), cut into consecutive blocks, and masked BERT's way
(:mod:`project.data.masking`) batch by batch on the training device.

A batch is ``(ids, targets)``: ``ids`` (batch, length) the masked blocks, ``[CLS] block [SEP]``, padded with 0 to the
longest of the batch; ``targets`` (batch, length) the original ids of the masked positions and -100 elsewhere.
Training batches are masked with draws from the module's own generator, whose state checkpoints keep (a run resumed
mid-epoch masks as the uninterrupted run did); validation and test blocks are masked the same way at every epoch
(each block with a generator seeded by ``split_seed`` and its position), so ``val/perplexity`` compares across epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from project.data.augment import batch_seed
from project.data.base import ImageDataModule
from project.data.cache import resolve_cache_dir
from project.data.masking import TokenMasking
from project.data.text import padded_batch, refuse_augmentation
from project.data.text_sources import corpus_files, corpus_lines, files_stamp, text_tokenizer
from project.data.token_cache import TokenCache
from project.errors import UserInputError


class _TokenBlocks(Dataset):
    """The corpus's ids in consecutive blocks of ``block`` tokens (the last one shorter), each ``[CLS] block [SEP]``,
    read from the memory-mapped cache (opened in each process that reads it: a DataLoader worker maps it again rather
    than receiving a copy)."""

    def __init__(self, cache: TokenCache, block: int) -> None:
        self.path, self.dtype, self.count = cache.tokens_path, cache.dtype, cache.manifest()["count"]
        self.block = block
        self.cls_id, self.sep_id = cache.tokenizer.cls_id, cache.tokenizer.sep_id
        self.tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return -(-self.count // self.block)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if self.tokens is None:
            self.tokens = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count,))
        piece = self.tokens[index * self.block : (index + 1) * self.block]
        ids = torch.empty(len(piece) + 2, dtype=torch.long)
        ids[0], ids[-1] = self.cls_id, self.sep_id
        ids[1:-1] = torch.from_numpy(piece.astype(np.int64))
        return ids, 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "tokens": None}


class _MaskedBlocks(Dataset):
    """Blocks masked the same way every time they are read: block ``i`` with a generator seeded by ``seed`` and
    ``i`` (validation and test: their metrics compare across epochs and runs)."""

    def __init__(self, blocks: Dataset, masking: TokenMasking, seed: int) -> None:
        self.blocks, self.masking, self.seed = blocks, masking, seed

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        ids, _ = self.blocks[index]
        generator = torch.Generator().manual_seed((self.seed % 2**31) * 2**32 + index)
        inputs, targets = self.masking(ids.unsqueeze(0), generator)
        return inputs[0], targets[0]


class TextCorpusDataModule(ImageDataModule):
    """Pretrain on raw text: ``files`` lists text files and folders (their ``.txt`` files, at any depth), UTF-8, of any
    size (read as a stream). They are tokenised once into a cache on disk (in ``$PROJECT_CACHE_DIR``, else
    ``./cache``), reused by later runs while the files and the tokenizer stay the same; the examples are consecutive
    blocks of ``max_length - 2`` tokens (``[CLS] block [SEP]``), the lines and files joined. ``data.split.val_size``
    blocks are held out (seeded) for validation and ``data.split.test_size`` for testing. The task is masked tokens
    (BERT's masking, :mod:`project.data.masking`); the network has an output per token id of the tokenizer
    (:attr:`num_classes`).

    Args:
        files: text files and folders of ``.txt`` files (relative names are read from ``data_dir`` when it is given,
            else the current folder).
        tokenizer: a ``tokenizer.json``, a Hugging Face model folder, or a checkpoint of a text run; default: a
            WordPiece of ``vocab_size`` tokens trained on the corpus, kept in the cache folder and recorded in every
            checkpoint (a fine-tune gives this run's checkpoint as its ``data.tokenizer``).
        vocab_size: the size of a tokenizer trained here (at most).
        max_length: the tokens of an example, ``[CLS]`` and ``[SEP]`` included.
        mask_rate: the share of (non-special) tokens chosen for prediction (BERT: 0.15).
        **kwargs: see :class:`~project.data.ImageDataModule` (batch_size, split, loading; no labels, no augment).
    """

    default_task = "masked_tokens"

    def __init__(
        self,
        files: str | list[str],
        tokenizer: str | None = None,
        vocab_size: int = 8192,
        max_length: int = 128,
        mask_rate: float = 0.15,
        data_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        refuse_augmentation(self)
        if max_length < 3:
            raise UserInputError(f"data.max_length must be at least 3 ([CLS], a token, [SEP]), got {max_length}")
        if not 0 < mask_rate < 1:
            raise UserInputError(f"data.mask_rate must lie in (0, 1), got {mask_rate}")
        self.data_dir = Path(data_dir).expanduser() if data_dir else Path()  # where relative names are read from
        self.paths = corpus_files(files, self.data_dir)
        stamp = files_stamp(self.paths)
        folder = resolve_cache_dir(None)  # $PROJECT_CACHE_DIR, else ./cache: the decoded images' folder too
        self.tokenizer = text_tokenizer(tokenizer, vocab_size, lambda: corpus_lines(self.paths), stamp, folder)
        self.num_classes = self.vocab_size = self.tokenizer.vocab_size
        self.max_length = max_length
        self.corpus = TokenCache(folder, self.paths, stamp, self.tokenizer)
        tokens = self.tokenizer.tokenizer.get_vocab(with_added_tokens=True)
        self.tokens = sorted(tokens, key=tokens.get)
        self.masking = TokenMasking(self.vocab_size, self.tokenizer.special_ids, self.tokenizer.mask_id, mask_rate)
        self.mask_generator = torch.Generator().manual_seed(self.shuffle_seed)

    @property
    def named_classes(self) -> list[str]:
        return self.tokens  # the tokens, by id

    @property
    def dataset_name(self) -> str:
        return f"the text of {self.paths[0].parent.name or self.paths[0].name}/"

    def prepare_data(self) -> None:
        """Tokenise the corpus into its cache, unless it is there already (one process per machine)."""
        self.corpus.build(lambda: corpus_lines(self.paths))

    def files_ready(self) -> bool:
        return self.corpus.ready()

    def load_split(self, train: bool) -> Dataset:
        self.prepare_data()  # (nothing to do when it was built)
        blocks = _TokenBlocks(self.corpus, self.max_length - 2)
        kept, held = self.split.test_split(len(blocks))
        if train:
            return torch.utils.data.Subset(blocks, kept.tolist())
        return _MaskedBlocks(torch.utils.data.Subset(blocks, held.tolist()), self.masking, self.split.split_seed + 1)

    def split_labels(self, dataset: Dataset) -> None:
        return None

    def split_train(self, full_train: Dataset) -> tuple[Dataset, Dataset]:
        train, val = super().split_train(full_train)
        return train, _MaskedBlocks(val, self.masking, self.split.split_seed)

    def collation(self, dataset: Dataset) -> Any:
        return padded_batch

    def network_batch(self, batch: Any, augment: bool) -> Any:
        """A batch as the network takes it: blocks masked here, on their device (training: with draws from the
        module's generator), unless they come masked (validation and test blocks: their targets are per token)."""
        if not (isinstance(batch, list | tuple) and len(batch) == 2 and isinstance(batch[0], Tensor)):
            return batch  # the example input of the model summary and TensorBoard's graph
        ids, targets = batch
        if targets.ndim == 2:
            return ids, targets
        rank = self.trainer.global_rank if self.trainer else 0
        seed = batch_seed(self.mask_generator, rank) if augment else self.split.split_seed
        return self.masking(ids, torch.Generator(device=ids.device).manual_seed(seed))

    def preprocessing(self) -> dict[str, Any]:
        """The tokenizer (its JSON document), the tokens of an example and the output names (the tokens)."""
        return {"tokenizer": self.tokenizer.to_json(), "max_length": self.max_length, "class_names": self.class_names}

    def state_dict(self) -> dict[str, Any]:
        """The base's state (the training order, ...) and the masking generator's: a resumed run masks on as the run
        it continues did."""
        return {**super().state_dict(), "mask_generator": self.mask_generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "mask_generator" in state_dict:
            self.mask_generator.set_state(state_dict["mask_generator"])
