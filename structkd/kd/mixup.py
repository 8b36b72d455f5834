"""Mixup KD for sequences (after MixKD, Liang et al., 2021).

Two sentences of a batch are mixed at the input-embedding level, ``x = lam * x_a + (1 - lam) * x_b``; the
teacher is run on the mixed input to get a distribution, and the student is distilled on the same mixed
input with structural KD.  The mixed sentence is as long as the longer of the two.  Typical use::

    lam, perm = sample_mixup(batch_size, alpha=0.4, rng=np.random.default_rng(0))
    mixed_t, lens = mix_embeddings(teacher_embeddings, lens, lam, perm)
    mixed_s, _ = mix_embeddings(student_embeddings, lens, lam, perm)
    teacher_dist = teacher_head(teacher_encoder(inputs_embeds=mixed_t), lens)
    loss = structural_kd_loss(teacher_dist, student_head(student_encoder(mixed_s), lens), ...)
"""

from __future__ import annotations

import numpy as np
import torch

Tensor = torch.Tensor


def sample_mixup(batch_size: int, alpha: float = 0.4, rng: np.random.Generator | None = None,
                 device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Mixing weights ``lam [batch_size]`` drawn from ``Beta(alpha, alpha)`` and a random partner
    permutation ``perm [batch_size]``, from ``rng`` (a fresh generator when ``None``)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    rng = np.random.default_rng() if rng is None else rng
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=batch_size)).float()
    perm = torch.from_numpy(rng.permutation(batch_size))
    return lam.to(device), perm.to(device)


def mix_embeddings(embeddings: Tensor, lens: Tensor, lam: Tensor | float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """Mix each sentence with its partner ``perm[b]``.

    Args:
        embeddings: ``[batch_size, seq_len, dim]`` input embeddings (zero or anything at padding).
        lens: ``LongTensor [batch_size]`` sentence lengths.
        lam: mixing weight of the sentence itself, a float or ``[batch_size]``.
        perm: ``LongTensor [batch_size]``, the partner of each sentence.

    Returns:
        mixed embeddings ``[batch_size, seq_len, dim]`` (at positions beyond one sentence's length only the other
        sentence contributes, with its own weight) and the mixed lengths ``max(lens, lens[perm])``.
    """
    lam = torch.as_tensor(lam, dtype=embeddings.dtype, device=embeddings.device)
    lam = lam.expand(embeddings.shape[0]).view(-1, 1, 1)
    positions = torch.arange(embeddings.shape[1], device=embeddings.device)
    own = (positions < lens.unsqueeze(-1)).unsqueeze(-1).to(embeddings.dtype)
    partner_lens = lens[perm]
    partner = (positions < partner_lens.unsqueeze(-1)).unsqueeze(-1).to(embeddings.dtype)
    mixed = lam * own * embeddings + (1 - lam) * partner * embeddings[perm]
    return mixed, torch.maximum(lens, partner_lens)
