"""A small transformer encoder for text, in plain torch: BERT's shape at a size a CPU trains.

Token ids (batch, length), padded with id 0, go through token and position embeddings and a stack of pre-norm
encoder layers (``nn.Linear`` layers and ``scaled_dot_product_attention``, which LoRA can adapt); padding is masked
out of attention. A classifier averages the vectors of the real tokens into one per text and puts its ``head`` on it;
a masked-language model (``per_token=True``, pretraining) puts its ``head`` on every token. Both have the same
``backbone``, so the encoder a pretraining run learned loads into a classifier with ``--model.finetuning.pretrained``
(its head is the part left behind).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from project.errors import UserInputError
from project.networks.base import Network

_PAD_ID = 0  # the padding id of every batch (project.data.tokenizer.PAD_ID; networks do not import data)


class _EncoderLayer(nn.Module):
    """One pre-norm encoder layer (``nn.TransformerEncoderLayer``'s with ``norm_first``, GELU and a feed-forward
    layer four times as wide), written with ``nn.Linear`` layers and ``scaled_dot_product_attention``: every weight is
    used through the layer that holds it, so LoRA's adapters on them act in training and in evaluation alike (torch's
    layer reads its weights itself in evaluation, past any adapter, and its attention never calls ``out_proj``:
    huggingface/peft#761)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention_dropout = dropout
        self.norm1 = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.output = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.linear1 = nn.Linear(width, 4 * width)
        self.linear2 = nn.Linear(4 * width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: Tensor, attend: Tensor) -> Tensor:
        """``hidden`` (batch, length, width); ``attend`` (batch, 1, 1, length): True at the keys to attend to."""
        batch, length, width = hidden.shape
        normed = self.norm1(hidden)
        q, k, v = (
            projection(normed).view(batch, length, self.heads, width // self.heads).transpose(1, 2)
            for projection in (self.query, self.key, self.value)
        )
        dropout = self.attention_dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=dropout)
        hidden = hidden + self.dropout(self.output(attended.transpose(1, 2).reshape(batch, length, width)))
        return hidden + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(hidden))))))


class _TokenEncoder(nn.Module):
    """Token ids (batch, length) -> a vector per token (batch, length, width), padding masked out of attention."""

    def __init__(self, vocab_size: int, width: int, depth: int, heads: int, max_length: int, dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width, padding_idx=_PAD_ID)
        self.positions = nn.Embedding(max_length, width)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(_EncoderLayer(width, heads, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.max_length = max_length

    def forward(self, ids: Tensor) -> Tensor:
        if not torch.jit.is_tracing() and ids.shape[1] > self.max_length:  # a trace (TensorBoard graph) has 8 ids
            raise ValueError(
                f"sequences of {ids.shape[1]} tokens, longer than the network's max_length {self.max_length}"
            )
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = self.dropout(self.tokens(ids) + self.positions(positions))
        attend = (ids != _PAD_ID)[:, None, None, :]  # every query attends to the real tokens only
        for layer in self.layers:
            hidden = layer(hidden, attend)
        return self.norm(hidden)


class TextTransformer(Network):
    """A transformer encoder over token ids, with a classifier head or (``per_token``) a masked-language-model head.

    Args:
        vocab_size: token ids the embedding holds: at least the tokenizer's vocabulary (checked against the data).
        num_outputs: outputs of the head: one per class, or (``per_token``) one per token id.
        width: the size of each token's vector.
        depth: encoder layers.
        heads: attention heads of each layer (``width`` must divide by it).
        max_length: the longest sequence the position embeddings take (the data's ``max_length`` or less).
        dropout: dropout of the embeddings and of each layer.
        per_token: the head on every token, outputs (batch, length, num_outputs): masked-language-model pretraining.
    """

    def __init__(
        self,
        vocab_size: int = 8192,
        num_outputs: int = 2,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        max_length: int = 128,
        dropout: float = 0.1,
        per_token: bool = False,
    ) -> None:
        super().__init__()
        _check(vocab_size, num_outputs, width, depth, heads, max_length, dropout)
        self.config = {
            "vocab_size": vocab_size,
            "num_outputs": num_outputs,
            "width": width,
            "depth": depth,
            "heads": heads,
            "max_length": max_length,
            "dropout": dropout,
            "per_token": per_token,
        }
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.num_outputs = num_outputs
        self.per_token = per_token
        self.backbone = _TokenEncoder(vocab_size, width, depth, heads, max_length, dropout)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, ids: Tensor) -> Tensor:
        tokens = self.backbone(ids)
        if self.per_token:
            return self.head(tokens)
        real = (ids != _PAD_ID).unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)  # the mean of the real tokens' vectors
        return self.head(pooled)

    def example_input(self) -> Tensor:
        return torch.full((1, 8), 5, dtype=torch.long)  # past the five special tokens' ids; never padding


def _check(
    vocab_size: int, num_outputs: int, width: int, depth: int, heads: int, max_length: int, dropout: float
) -> None:
    """Refuse sizes the network cannot be built with, naming the option."""
    for name, value in (
        ("vocab_size", vocab_size),
        ("num_outputs", num_outputs),
        ("width", width),
        ("depth", depth),
        ("heads", heads),
        ("max_length", max_length),
    ):
        if not isinstance(value, int) or value < 1:
            raise UserInputError(f"model.network.init_args.{name} must be a positive integer, got {value!r}")
    if width % heads:
        raise UserInputError(f"model.network.init_args.width ({width}) must divide by heads ({heads})")
    if not 0 <= dropout < 1:
        raise UserInputError(f"model.network.init_args.dropout must be in [0, 1), got {dropout!r}")
