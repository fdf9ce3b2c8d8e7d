"""A corpus tokenised once, on disk (:class:`TokenCache`): every token id of the corpus files in order, a flat array
of ``uint16`` (a vocabulary of up to 65,536 ids) or ``int32``, memory-mapped when read, and a JSON manifest beside it.

The manifest is written last (:func:`project.files.atomic.written_whole`), after the ids, and removed before a
rebuild starts, so ids without a manifest that matches are never used: a build killed part-way is rebuilt. Its key
says what the ids were made from (each file's path, size and modification time, and the tokenizer's fingerprint): a
changed file or another tokenizer rebuilds the cache. The cache's name says which files and which tokenizer (a
changed file replaces its ids rather than piling up beside them). One process at a time builds (a lock file beside
it); the others wait, then open it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from project.data.cache import digest
from project.data.text_sources import locked
from project.data.tokenizer import TextTokenizer
from project.errors import UserInputError
from project.files.atomic import written_whole

_FORMAT = 1
"""The layout of a token cache; one of another format is rebuilt."""
_CHUNK_CHARACTERS = 1 << 20
"""Lines are tokenised in pieces of about this many characters (the library spreads a piece over the cores)."""


class TokenCache:
    """The token ids of ``paths`` (in order) under ``tokenizer``, kept in ``folder``; ``stamp`` says what the files
    are now (:func:`~project.data.text_sources.files_stamp`)."""

    def __init__(self, folder: Path, paths: list[Path], stamp: str, tokenizer: TextTokenizer) -> None:
        name = digest(*(str(path.resolve()) for path in paths), tokenizer.fingerprint)[:16]
        folder = folder.resolve()
        self.tokens_path = folder / f"corpus-{name}.tokens"
        self.manifest_path = folder / f"corpus-{name}.json"
        self.key = digest(f"format {_FORMAT}", stamp, tokenizer.fingerprint)
        self.dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32)
        self.tokenizer = tokenizer
        self.source = ", ".join(str(path) for path in paths[:3]) + (
            f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        )

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, when it matches the files, the tokenizer and the ids on disk; else ``None`` (to rebuild)."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            size = self.tokens_path.stat().st_size
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != self.key or manifest.get("dtype") != self.dtype.str:
            return None
        count = manifest.get("count")
        return manifest if isinstance(count, int) and count * self.dtype.itemsize == size else None

    def ready(self) -> bool:
        return self.manifest() is not None

    def build(self, lines: Callable[[], Iterable[str]]) -> None:
        """Tokenise ``lines()`` into the cache unless it is there and right (its lock held throughout); refused when
        the corpus holds no token."""
        with locked(self.tokens_path):
            if self.ready():
                return
            rank_zero_info(f"Tokenising {self.source} into the cache {self.tokens_path}")
            self.manifest_path.unlink(missing_ok=True)  # ids without a manifest are never used
            count = 0
            with written_whole(self.tokens_path) as file:
                for ids in self.pieces(lines()):
                    file.write(ids.tobytes())
                    count += len(ids)
            if count == 0:
                self.tokens_path.unlink(missing_ok=True)
                raise UserInputError(f"data.files: the corpus is empty ({self.source} hold no token)")
            manifest = {"key": self.key, "dtype": self.dtype.str, "count": count, "format": _FORMAT,
                        "tokenizer": self.tokenizer.fingerprint}  # fmt: skip
            with written_whole(self.manifest_path, "w", encoding="utf-8") as file:
                json.dump(manifest, file)

    def pieces(self, lines: Iterable[str]) -> Iterable[np.ndarray]:
        """The ids of ``lines`` (no ``[CLS]`` or ``[SEP]``), a piece of about :data:`_CHUNK_CHARACTERS` at a time."""
        piece: list[str] = []
        size = 0
        for line in lines:
            piece.append(line)
            size += len(line)
            if size >= _CHUNK_CHARACTERS:
                yield self.encoded(piece)
                piece, size = [], 0
        if piece:
            yield self.encoded(piece)

    def encoded(self, lines: list[str]) -> np.ndarray:
        sequences = self.tokenizer.encode_plain(lines)
        count = sum(len(sequence) for sequence in sequences)
        return np.fromiter(chain.from_iterable(sequences), dtype=self.dtype, count=count)

    def tokens(self) -> np.ndarray:
        """The ids, memory-mapped read-only (the operating system's page cache holds what was read)."""
        manifest = self.manifest()
        if manifest is None:
            raise RuntimeError(f"{self.tokens_path} is not built: call prepare_data() first")
        return np.memmap(self.tokens_path, dtype=self.dtype, mode="r", shape=(manifest["count"],))
