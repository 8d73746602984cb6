"""GRPO pieces as free functions: group advantages, the clipped surrogate loss with k3 KL, log-probs.

Follows the AVRT paper (eq. 6): PPO-style min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) per
token, minus beta * KL to the reference policy, with the k3 estimator
KL = exp(ref - logp) - (ref - logp) - 1 (unbiased, always >= 0). Matches TRL's GRPOTrainer:
- advantages use the *unbiased* group standard deviation (torch.std default, as TRL's nanstd)
  and (r - mean) / (std + 1e-4);
- loss_type "grpo" averages tokens within each sequence, then sequences (TRL "grpo");
  "token" sums all tokens and divides by the total mask count (TRL "bnpo", DAPO-style).
The KL term is added to the per-token loss before the reduction, as TRL does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Scale = Literal["group", "none"]
LossType = Literal["grpo", "token"]


@dataclass(frozen=True)
class GrpoStats:
    """Scalar diagnostics of one loss evaluation (token means are over masked tokens)."""

    loss: float
    policy_loss: float
    """The clipped-surrogate part alone (without beta * KL), same reduction as the loss."""
    kl_mean: float
    clip_fraction: float
    """Fraction of tokens where the clipped branch is the active one (ratio outside the band, pushing out)."""
    ratio_mean: float
    ratio_max: float
    advantage_mean: float
    tokens: int


def group_advantages(rewards: torch.Tensor, group_size: int, scale: Scale = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """(r - group mean) / (unbiased group std + eps) for rewards laid out group by group.

    rewards [B*G] holds G consecutive completions of each prompt. scale="none" only centres
    (Dr. GRPO). A group of one has std 0 (TRL does the same).
    """
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    # float64: rewards that differ only in their last fp32 digits (e.g. -5.4375 vs -5.4343) would otherwise
    # centre asymmetrically, and dividing by their tiny std blows the rounding up to a nonzero group mean.
    grouped = rewards.double().view(-1, group_size)  # [B, G]
    mean = grouped.mean(dim=1, keepdim=True)  # [B, 1]
    centred = grouped - mean  # [B, G]
    if scale == "none":
        return centred.reshape(-1).float()  # [B*G]
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)  # [B, 1]
    return (centred / (std + eps)).reshape(-1).float()  # [B*G]


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1."""
    delta = ref_logp - logp  # [N, L]
    return torch.exp(delta) - delta - 1.0  # [N, L]


def _reduce(per_token: torch.Tensor, mask: torch.Tensor, loss_type: LossType) -> torch.Tensor:
    """Masked reduction: per-sequence means then mean ("grpo") or one token mean ("token")."""
    if loss_type == "grpo":
        # A row without any valid token contributes 0 (and still counts in the mean, as TRL's "grpo").
        per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [N]
        return per_seq.sum() / max(per_seq.numel(), 1)  # []: an empty batch gives 0, not mean([]) = NaN
    if loss_type == "token":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)  # []
    raise ValueError(f"loss_type must be 'grpo' or 'token', got {loss_type!r}")


def _check_shapes(logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, **others) -> None:
    """Clear error on mismatched shapes instead of a silent broadcast."""
    if logp.dim() != 2 or mask.shape != logp.shape:
        raise ValueError(f"logp and mask must both be [N, L], got {tuple(logp.shape)} and {tuple(mask.shape)}")
    if advantages.shape != (logp.shape[0],):
        raise ValueError(f"advantages must be [N]={logp.shape[0]}, got {tuple(advantages.shape)}")
    for name, t in others.items():
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} must match logp {tuple(logp.shape)}, got {tuple(t.shape)}")


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float = 0.2, beta: float = 0.01,
              loss_type: LossType = "grpo") -> tuple[torch.Tensor, GrpoStats]:
    """Clipped GRPO surrogate + beta * k3 KL, reduced over masked completion tokens.

    logp/old_logp/ref_logp/mask are [N, L] (N = B*G completions); advantages is [N].
    old_logp=None means a single on-policy step (ratio 1, gradient still flows through logp);
    ref_logp=None or beta=0 drops the KL term.
    """
    _check_shapes(logp, mask, advantages, old_logp=old_logp, ref_logp=ref_logp)
    valid = mask.bool()  # [N, L]
    mask = mask.to(logp.dtype)  # [N, L]
    old = logp.detach() if old_logp is None else old_logp  # [N, L]
    # Padding may hold any value: zero the log-ratio there so exp() cannot make inf * 0 = NaN.
    ratio = torch.exp((logp - old).masked_fill(~valid, 0.0))  # [N, L]
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)  # [N, L]
    adv = advantages.to(logp.dtype).unsqueeze(1)  # [N, 1]
    surrogate = -torch.min(ratio * adv, clipped * adv)  # [N, L]
    use_kl = ref_logp is not None and beta != 0.0
    kl = (k3_kl(logp.masked_fill(~valid, 0.0), ref_logp.masked_fill(~valid, 0.0)) if use_kl
          else torch.zeros_like(logp))  # [N, L]
    per_token = surrogate + beta * kl  # [N, L]
    loss = _reduce(per_token, mask, loss_type)  # []
    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1.0)  # []
        active = ((ratio < 1.0 - clip_eps) & (adv < 0)) | ((ratio > 1.0 + clip_eps) & (adv > 0))  # [N, L]
        stats = GrpoStats(
            loss=float(loss),
            policy_loss=float(_reduce(surrogate, mask, loss_type)),
            kl_mean=float((kl * mask).sum() / n_tok),
            clip_fraction=float((active.to(mask.dtype) * mask).sum() / n_tok),
            ratio_mean=float((ratio * mask).sum() / n_tok),
            ratio_max=float(ratio.masked_fill(~valid, float("-inf")).max()) if valid.any() else 1.0,
            advantage_mean=float(advantages.float().mean()) if advantages.numel() else 0.0,
            tokens=int(mask.sum()),
        )
    return loss, stats


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """log p(tokens[n, t] | logits[n, t]) without materialising a full [N, L, V] log-softmax.

    Logits must already be aligned with `tokens` (the caller shifts: logits[:, :-1] vs ids[:, 1:]).
    Works on chunks of rows with cross_entropy in float32; positions with token -100 get 0.
    Gradients flow to `logits`.
    """
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(f"need logits [N, L, V] and tokens [N, L], got {tuple(logits.shape)} and "
                         f"{tuple(tokens.shape)}")
    n, length, vocab = logits.shape
    flat_logits = logits.reshape(n * length, vocab)  # [N*L, V]
    flat_tokens = tokens.reshape(n * length)  # [N*L]
    parts = [
        -F.cross_entropy(flat_logits[i:i + chunk_rows].float(), flat_tokens[i:i + chunk_rows],
                         reduction="none", ignore_index=-100)  # [chunk]
        for i in range(0, n * length, chunk_rows)
    ]
    out = torch.cat(parts) if parts else flat_logits.new_zeros(0, dtype=torch.float32)  # [N*L]
    return out.view(n, length)  # [N, L]


def sequence_logprobs(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of masked token log-probs per sequence: [N, L, V], [N, L], [N, L] -> [N]."""
    per_token = token_logprobs(logits, tokens)  # [N, L]
    return (per_token * mask.to(per_token.dtype)).sum(dim=1)  # [N]


def microbatch_weight(mask: torch.Tensor, rows: slice, loss_type: LossType) -> float:
    """Share of the whole batch's loss carried by `rows` of `mask` [R, N], so micro-batch losses add up to
    the full one."""
    if loss_type == "grpo":  # mean over sequences
        return (rows.stop - rows.start) / mask.shape[0]
    return float(mask[rows].sum() / mask.sum().clamp(min=1))  # mean over all tokens


def merge_stats(parts: list[tuple[GrpoStats, float]]) -> GrpoStats:
    """Combine micro-batch stats: losses by their weights, token means by token counts."""
    tokens = sum(s.tokens for s, _ in parts) or 1

    def by_tokens(attr: str) -> float:
        return sum(getattr(s, attr) * s.tokens for s, _ in parts) / tokens

    return GrpoStats(
        loss=sum(s.loss * w for s, w in parts), policy_loss=sum(s.policy_loss * w for s, w in parts),
        kl_mean=by_tokens("kl_mean"), clip_fraction=by_tokens("clip_fraction"), ratio_mean=by_tokens("ratio_mean"),
        ratio_max=max(s.ratio_max for s, _ in parts),
        advantage_mean=sum(s.advantage_mean for s, _ in parts) / len(parts),
        tokens=sum(s.tokens for s, _ in parts),
    )


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """Clip by global norm; works for plain and FSDP2 (DTensor) gradients alike."""
    grads = [p for p in params if p.grad is not None]
    if grads:
        torch.nn.utils.clip_grad_norm_(grads, max_norm)
