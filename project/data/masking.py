"""BERT's masking of token ids for masked-language-model pretraining (:class:`TokenMasking`): of the tokens that are
not special (padding, ``[CLS]``, ``[SEP]``, ...), 15% are chosen; of those, 80% become ``[MASK]``, 10% a random token
that is not special, and 10% stay as they are; the targets are the chosen tokens' ids, and -100 (ignored by the loss)
everywhere else (Devlin et al. 2019, section 3.1; Hugging Face's ``DataCollatorForLanguageModeling``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from project.tasks.masked_tokens import IGNORED


class TokenMasking:
    """BERT's masking for a vocabulary of ``vocab_size`` ids, ``special_ids`` among them (never chosen, never drawn as
    random tokens), ``mask_id`` the ``[MASK]`` token; ``rate`` of the other tokens are chosen.

    Every draw comes from the generator it is given, on the batch's device: the same generator state masks the same
    batch the same way (exact resume, validation masked the same at every epoch)."""

    def __init__(self, vocab_size: int, special_ids: Sequence[int], mask_id: int, rate: float = 0.15) -> None:
        self.vocab_size, self.mask_id, self.rate = vocab_size, mask_id, rate
        self.special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
        kept = torch.ones(vocab_size, dtype=torch.bool)
        kept[self.special[self.special < vocab_size]] = False
        self.ordinary = kept.nonzero().flatten()  # the ids a random replacement is drawn from

    def __call__(self, ids: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)`` for ``ids`` (batch, length): the masked ids, and the original ids of the chosen
        positions (-100 elsewhere). A batch with a maskable token always has one chosen (a batch without would have
        no loss): the one with the smallest draw, when the rate chose none."""
        device = ids.device
        maskable = ~torch.isin(ids, self.special.to(device))
        draws = torch.rand(ids.shape, generator=generator, device=device)
        chosen = (draws < self.rate) & maskable
        if not bool(chosen.any()) and bool(maskable.any()):
            first = torch.where(maskable, draws, torch.full_like(draws, 2.0)).flatten().argmin()
            chosen.view(-1)[first] = True
        action = torch.rand(ids.shape, generator=generator, device=device)
        ordinary = self.ordinary.to(device)
        random_ids = ordinary[torch.randint(len(ordinary), ids.shape, generator=generator, device=device)]
        inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
        return inputs, torch.where(chosen, ids, torch.full_like(ids, IGNORED))
