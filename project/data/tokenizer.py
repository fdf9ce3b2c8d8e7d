"""Text to token ids: a WordPiece tokenizer trained on your own texts, or a Hugging Face model's, read as data.

:class:`TextTokenizer` wraps a ``tokenizers.Tokenizer`` (the Rust library Hugging Face's fast tokenizers are made of)
and fixes what the rest of the project relies on: ``[PAD]`` is id 0 (a network's attention mask is ``ids != 0``), and
``[CLS]``, ``[SEP]``, ``[MASK]`` and ``[UNK]`` exist. A tokenizer is a JSON document: checkpoints record it as a
string (:meth:`to_json`), exports save it as ``tokenizer.json``, and reading one runs no code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from project.errors import UserInputError, install_command

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""The special tokens a trained tokenizer starts its vocabulary with, in this order: ``[PAD]`` is id 0."""
PAD_ID = 0
"""The padding id of every batch of token ids; a network masks the positions that hold it."""


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise UserInputError(f"text needs the tokenizers library: {install_command('tokenizers')}") from None
    return tokenizers


class TextTokenizer:
    """A tokenizer the project can train, record, read back and batch with.

    Build one with :meth:`train` (on your texts), :meth:`read` (a file or a model folder) or :meth:`from_json` (what a
    checkpoint recorded); it is checked when built (:meth:`_checked`).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocabulary = tokenizer.get_vocab(with_added_tokens=True)
        missing = [token for token in SPECIAL_TOKENS if token not in vocabulary]
        if missing:
            raise UserInputError(
                f"the tokenizer has no {', '.join(missing)} token: the project needs {', '.join(SPECIAL_TOKENS)} "
                "(a BERT-style vocabulary, or one trained by the project)"
            )
        if vocabulary["[PAD]"] != PAD_ID:
            raise UserInputError(
                f"the tokenizer's [PAD] is id {vocabulary['[PAD]']}: the project pads with id {PAD_ID}"
            )
        self.cls_id = vocabulary["[CLS]"]
        self.sep_id = vocabulary["[SEP]"]
        self.mask_id = vocabulary["[MASK]"]
        self.unk_id = vocabulary["[UNK]"]
        self.pad_id = PAD_ID
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.special_ids = sorted(vocabulary[token] for token in SPECIAL_TOKENS)
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192) -> TextTokenizer:
        """A BERT-style WordPiece tokenizer (lowercased, accents stripped) trained on ``texts``: at most
        ``vocab_size`` tokens, fewer when the texts hold fewer."""
        if vocab_size < len(SPECIAL_TOKENS) + 1:
            raise UserInputError(f"data.vocab_size must be at least {len(SPECIAL_TOKENS) + 1}, got {vocab_size}")
        library = _tokenizers()
        tokenizer = _bert_style(library.models.WordPiece(unk_token="[UNK]"), lowercase=True)
        trainer = library.trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        _add_template(tokenizer)
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str) -> TextTokenizer:
        """The tokenizer a JSON document describes (what :meth:`to_json` gives, a ``tokenizer.json``)."""
        try:
            return cls(_tokenizers().Tokenizer.from_str(text))
        except Exception as error:  # the library says what is wrong in its own exception type
            if isinstance(error, UserInputError):
                raise
            raise UserInputError(f"not a tokenizer: {str(error).splitlines()[0] if str(error) else error!r}") from None

    @classmethod
    def read(cls, path: str | Path) -> TextTokenizer:
        """The tokenizer of ``path``: a ``tokenizer.json`` file, a folder holding one (a Hugging Face model folder),
        or a folder with BERT's ``vocab.txt`` alone (read as BERT's uncased WordPiece)."""
        path = Path(path).expanduser()
        if path.is_dir() and (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        elif path.is_dir() and (path / "vocab.txt").is_file():
            model = _tokenizers().models.WordPiece.from_file(str(path / "vocab.txt"), unk_token="[UNK]")
            tokenizer = _bert_style(model, lowercase=_lowercase(path / "tokenizer_config.json"))
            _add_template(tokenizer)
            return cls(tokenizer)
        if not path.is_file():
            raise UserInputError(
                f"data.tokenizer: {path} is neither a tokenizer.json, nor a folder with tokenizer.json or vocab.txt"
            )
        return cls.from_json(path.read_text(encoding="utf-8"))

    def to_json(self) -> str:
        """The tokenizer as a JSON document: what checkpoints record and exports save as ``tokenizer.json``."""
        return self.tokenizer.to_str()

    @property
    def fingerprint(self) -> str:
        """16 hex digits that tell two tokenizers apart (of their JSON document)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Each text's token ids, ``[CLS] ... [SEP]``, cut to ``max_length`` ids (the ``[SEP]`` kept last)."""
        if max_length < 3:
            raise UserInputError(
                f"data.max_length must be at least 3 (a token between [CLS] and [SEP]), got {max_length}"
            )
        sequences = []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            ids = encoding.ids
            sequences.append(ids if len(ids) <= max_length else [*ids[: max_length - 1], self.sep_id])
        return sequences

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids without ``[CLS]`` and ``[SEP]``, uncut: a corpus's running text."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of ``ids``, special tokens and padding left out."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def pad(self, sequences: Sequence[Sequence[int] | Tensor]) -> Tensor:
        """A batch of ``sequences`` as one LongTensor (batch, longest), padded with ``[PAD]`` (0): dynamic padding."""
        tensors = [torch.as_tensor(sequence, dtype=torch.long) for sequence in sequences]
        return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=PAD_ID)


def _bert_style(model: Any, lowercase: bool) -> Any:
    """A tokenizer of ``model`` (a WordPiece vocabulary) with BERT's normalizer, pre-tokenizer and decoder."""
    library = _tokenizers()
    tokenizer = library.Tokenizer(model)
    tokenizer.normalizer = library.normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase or None)
    tokenizer.pre_tokenizer = library.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = library.decoders.WordPiece()
    return tokenizer


def _add_template(tokenizer: Any) -> None:
    """Make ``tokenizer`` wrap each text as ``[CLS] text [SEP]`` (and pairs as BERT does)."""
    cls_id, sep_id = (tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]"))
    if cls_id is None or sep_id is None:
        return  # refused by TextTokenizer, which names what is missing
    tokenizer.post_processor = _tokenizers().processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )


def _lowercase(config_path: Path) -> bool:
    """Whether a Hugging Face folder's tokenizer lowercases (``do_lower_case`` of its ``tokenizer_config.json``,
    read as JSON data); BERT's uncased default without one."""
    if not config_path.is_file():
        return True
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserInputError(f"data.tokenizer: {config_path} is not JSON") from None
    return bool(config.get("do_lower_case", True)) if isinstance(config, dict) else True
