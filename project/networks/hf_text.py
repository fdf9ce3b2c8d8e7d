"""BERT-family text models from Hugging Face (``AutoModel``) behind the :class:`~project.networks.Network` contract.

:class:`HuggingFaceText` takes a batch of token ids (padded with 0, the project's ``[PAD]``), gives the model the
attention mask ``ids != 0``, and puts a new ``nn.Linear`` head on the first token's last hidden state (``[CLS]``: a
classifier), or on every token's (``per_token``: masked-language-model pretraining from scratch). The model is built
by :func:`~project.networks.library.hugging_face_model` (local folder or hub id, no code of its own, safetensors
weights only), so fine-tuning, frozen epochs, the backbone's learning rate, LoRA, EMA, schedules, checkpoints and
export work on it as on any network.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from project.errors import UserInputError
from project.networks.base import Network
from project.networks.library import hugging_face_model

_PAD_ID = 0
"""The id text batches are padded with (``project.data.tokenizer``'s ``[PAD]``): the attention mask is ``ids != 0``."""


class HuggingFaceText(Network):
    """A Hugging Face text encoder (BERT, DistilBERT, ELECTRA, ... : a model type Transformers defines) as backbone,
    and a new linear head.

    The features are the first token's last hidden state (``[CLS]``), as in BERT's paper (section 4.1; the pooling
    layer some models have, a dense + tanh trained for next-sentence prediction, is left out: a model pretrained here
    by masked tokens alone never trains it). Its vocabulary must pad with id 0 (BERT's does; RoBERTa's pads with 1
    and is refused), since text batches are padded with 0.

    Args:
        model: a local folder written by ``save_pretrained`` (``config.json``, ``model.safetensors``; read first when
            it exists) or a Hugging Face hub id (``bert-base-uncased``, downloaded by Transformers into its cache).
            Give the data the same folder for its tokenizer (``--data.tokenizer``).
        num_outputs: set from the data (the classes; with ``per_token``, the vocabulary).
        weights: ``pretrained`` (the model's own weights) or ``null`` (built from its config alone, randomly
            initialised: pretraining from scratch, and how a checkpoint, which holds the weights, rebuilds it).
        per_token: a head on every token, outputs (batch, length, num_outputs): masked-language-model pretraining.
        dropout: dropout on the features before the head (BERT's classifier's 0.1).
    """

    # A checkpoint holds the weights: rebuilding the network from it needs no download and no weights file.
    checkpoint_overrides: ClassVar[dict[str, Any]] = {"weights": None}

    def __init__(
        self,
        model: str = "bert-base-uncased",
        num_outputs: int = 2,
        weights: str | None = "pretrained",
        per_token: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if weights not in ("pretrained", None):
            raise UserInputError(f"model.network.init_args.weights must be pretrained or null, got {weights!r}")
        if not 0.0 <= dropout < 1.0:
            raise UserInputError(f"model.network.init_args.dropout must lie in [0, 1), got {dropout}")
        option = "model.network.init_args.model"
        self.backbone = hugging_face_model(model, weights == "pretrained", option, pooler=False)
        settings = self.backbone.config
        if settings.pad_token_id != _PAD_ID:
            raise UserInputError(
                f"{option} {model}: its vocabulary pads with token id {settings.pad_token_id}, and text batches pad "
                f"with {_PAD_ID} (BERT's [PAD]): use a BERT-family model whose pad_token_id is 0"
            )
        self.vocab_size = int(settings.vocab_size)
        self.max_length = int(settings.max_position_embeddings)
        self.per_token = per_token
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(settings.hidden_size), num_outputs)
        self.num_outputs = num_outputs
        self.config = {
            "model": model,
            "num_outputs": num_outputs,
            "weights": weights,
            "per_token": per_token,
            "dropout": dropout,
        }

    def example_input(self) -> Tensor:
        """A batch of one text of 8 tokens (id 5, not padding)."""
        return torch.full((1, 8), 5, dtype=torch.long)

    def forward(self, ids: Tensor) -> Tensor:
        """Raw outputs for a batch of token ids (batch, length) padded with 0: (batch, num_outputs), or with
        ``per_token`` (batch, length, num_outputs)."""
        if ids.shape[-1] > self.max_length:
            raise UserInputError(
                f"texts of {ids.shape[-1]} tokens, and {self.config['model']} takes at most {self.max_length}: set "
                f"data.max_length to {self.max_length} or less"
            )
        hidden = self.backbone(input_ids=ids, attention_mask=(ids != _PAD_ID).long()).last_hidden_state
        features = hidden if self.per_token else hidden[:, 0]
        return self.head(self.dropout(features))
