"""Logits and cross-entropy only where there is a label.

The thinker's LM head is 152k wide; the stock forward materialises logits for every position
([B, L, 152k], then an fp32 copy in the loss), although SFT labels cover only the assistant turn.
Here the body runs to hidden states, the positions whose *shifted* label is not -100 are gathered,
and the head + fp32 cross-entropy run on those rows only. The mean over label tokens equals HF's
`ForCausalLMLoss` (tested), and so do its gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from avcot.thinker.forward import MediaFeatures, lm_hidden_states, unwrap_thinker

IGNORE = -100


def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, L-1] of positions whose next token is labelled, their targets [n])."""
    nxt = labels[:, 1:]  # [B, L-1]; hidden state t predicts token t+1
    mask = nxt != IGNORE
    return mask, nxt[mask]


def label_only_loss(lm_head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions, the head applied there only.

    hidden: [B, L, H] final-norm hidden states; labels: [B, L] with -100 where unsupervised.
    """
    mask, targets = label_positions(labels)
    if targets.numel() == 0:
        raise ValueError("batch has no labelled tokens (every label is -100): nothing to train on")
    rows = hidden[:, :-1][mask]  # [n, H]
    logits = lm_head(rows).float()  # [n, V]; fp32 for a stable softmax, as HF's loss does
    return F.cross_entropy(logits, targets.to(logits.device), reduction="mean")


def label_token_logprobs(lm_head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities [B, L-1] of each labelled next token (0 elsewhere), for GRPO ratios and KL.

    Equal to `log_softmax(logits / temperature)` gathered at the targets, computed on labelled rows only.
    """
    mask, targets = label_positions(labels)
    rows = hidden[:, :-1][mask]  # [n, H]
    logp = torch.log_softmax(lm_head(rows).float() / temperature, dim=-1)  # [n, V]
    picked = logp.gather(-1, targets.to(logp.device).unsqueeze(-1)).squeeze(-1)  # [n]
    out = torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device)  # [B, L-1]
    return out.masked_scatter(mask.to(out.device), picked)


def sft_loss(model, batch: dict, features: MediaFeatures | None = None, *, towers_grad: bool = False) -> torch.Tensor:
    """SFT loss through the fast path: towers (or cached `features`) -> LM body -> label-only head.

    Equals `model(**model_inputs(batch)).loss` (same value, same LoRA gradients; with `towers_grad` the towers'
    gradients too).
    """
    thinker = unwrap_thinker(model)
    hidden = lm_hidden_states(model, batch, features, towers_grad=towers_grad)  # [B, L, H]
    return label_only_loss(thinker.lm_head, hidden, batch["labels"])
