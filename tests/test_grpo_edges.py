"""Edges of avcot.grpo with hand-computed values: masked rows, empty batches, band edges, defaults.

Each test pins a behaviour that a one-token change to avcot/grpo.py would alter unnoticed by
tests/test_grpo.py (found by tests/tools/mutate.py).
"""
from __future__ import annotations

import math

import pytest
import torch

from avcot.grpo import (
    GrpoStats, clip_grad_norm, group_advantages, grpo_loss, merge_stats, microbatch_weight, sequence_logprobs,
    token_logprobs,
)


@pytest.mark.parametrize(("loss_type", "expected"), [
    ("grpo", (-1.0 + 0.0) / 2),  # row 0: mean -1 over 2 tokens; row 1 has no token and counts as 0
    ("token", (-1.0 - 1.0) / 2),  # two valid tokens in total
])
def test_fully_masked_row_gives_a_finite_loss(loss_type: str, expected: float) -> None:
    # on-policy (ratio 1), A = [1, 2], beta 0: per-token loss -A on valid tokens
    logp = torch.zeros(2, 2, requires_grad=True)  # [N=2, L=2]
    mask = torch.tensor([[1, 1], [0, 0]])
    loss, stats = grpo_loss(logp, None, None, torch.tensor([1.0, 2.0]), mask, beta=0.0, loss_type=loss_type)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[1].abs().sum() == 0.0
    assert stats.tokens == 2 and stats.advantage_mean == pytest.approx(1.5)


@pytest.mark.parametrize("loss_type", ["grpo", "token"])
def test_all_tokens_masked_gives_zero_loss_and_finite_stats(loss_type: str) -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    ref = torch.full((2, 3), -1.0)
    loss, stats = grpo_loss(logp, torch.zeros(2, 3), ref, torch.tensor([1.0, -1.0]), torch.zeros(2, 3),
                            loss_type=loss_type)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(2, 3))
    # no token: the means are 0 and ratio_max falls back to 1 (no ratio was seen)
    assert (stats.kl_mean, stats.clip_fraction, stats.ratio_mean, stats.ratio_max, stats.tokens) == (
        0.0, 0.0, 0.0, 1.0, 0)
    assert stats.advantage_mean == 0.0 and stats.policy_loss == 0.0


@pytest.mark.parametrize("loss_type", ["grpo", "token"])
def test_empty_batch_gives_zero_loss(loss_type: str) -> None:
    # no completion at all (N = 0): nothing to learn from, loss 0 rather than the mean of nothing (NaN)
    loss, stats = grpo_loss(torch.zeros(0, 4), None, None, torch.zeros(0), torch.zeros(0, 4), loss_type=loss_type)
    assert loss.item() == 0.0
    assert stats.advantage_mean == 0.0 and stats.tokens == 0 and stats.ratio_max == 1.0


def test_token_loss_of_one_token_is_minus_advantage() -> None:
    # one valid token, on-policy, A = 3: per-token -3, divided by 1 token
    loss, _ = grpo_loss(torch.zeros(1, 2), None, None, torch.tensor([3.0]), torch.tensor([[0, 1]]), beta=0.0,
                        loss_type="token")
    assert loss.item() == pytest.approx(-3.0)


def test_default_beta_is_0_01() -> None:
    # on-policy, A = 1, ref - logp = log 2 on the one token: -1 + 0.01 * (1 - log 2)
    loss, stats = grpo_loss(torch.zeros(1, 1), None, torch.full((1, 1), math.log(2.0)), torch.tensor([1.0]),
                            torch.ones(1, 1))
    assert loss.item() == pytest.approx(-1.0 + 0.01 * (1.0 - math.log(2.0)))
    assert stats.kl_mean == pytest.approx(1.0 - math.log(2.0))


def test_default_clip_band_is_0_2() -> None:
    # ratio e^0.3 = 1.35 > 1.2 with A = 1: clipped to 1.2 by default; with clip_eps 0.5 it is not
    args = (torch.full((1, 1), 0.3), torch.zeros(1, 1), None, torch.tensor([1.0]), torch.ones(1, 1))
    assert grpo_loss(*args, beta=0.0)[0].item() == pytest.approx(-1.2)
    assert grpo_loss(*args, beta=0.0, clip_eps=0.5)[0].item() == pytest.approx(-math.exp(0.3), rel=1e-6)


def test_ratio_on_the_band_edge_is_not_counted_as_clipped() -> None:
    # on-policy ratio 1 with clip_eps 0: the band is [1, 1] and ratio 1 sits on it, so nothing is clipped
    for adv in (1.0, -1.0):
        _, stats = grpo_loss(torch.zeros(1, 2), None, None, torch.tensor([adv]), torch.ones(1, 2), clip_eps=0.0)
        assert stats.clip_fraction == 0.0


@pytest.mark.parametrize("shift", [1.0, -1.0])
def test_zero_advantage_is_never_clipped(shift: float) -> None:
    # ratio e or e^-1, far outside [0.8, 1.2], but A = 0: neither branch pushes, loss 0, nothing clipped
    loss, stats = grpo_loss(torch.full((1, 1), shift), torch.zeros(1, 1), None, torch.tensor([0.0]),
                            torch.ones(1, 1), beta=0.0)
    assert loss.item() == 0.0 and stats.clip_fraction == 0.0


def test_clip_fraction_counts_only_tokens_pushed_out_of_the_band() -> None:
    # 4 tokens of one sequence, A = -1: ratios e^-1 (below the band: counts), e^0.1 (inside), e^1 (above, but a
    # negative advantage pushes it down: unclipped branch active, does not count), padding (ignored)
    logp = torch.tensor([[-1.0, 0.1, 1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = grpo_loss(logp, torch.zeros(1, 4), None, torch.tensor([-1.0]), mask, beta=0.0)
    assert stats.clip_fraction == pytest.approx(1 / 3)
    assert stats.ratio_mean == pytest.approx((math.exp(-1) + math.exp(0.1) + math.e) / 3, rel=1e-6)
    assert stats.ratio_max == pytest.approx(math.e, rel=1e-6)
    # per token -min(-r, -clip(r)) = max(r, clip(r)): 0.8, e^0.1, e -> mean
    assert loss.item() == pytest.approx((0.8 + math.exp(0.1) + math.e) / 3, rel=1e-6)
    # the policy part alone (beta 0) equals the loss
    assert stats.policy_loss == pytest.approx(loss.item())


def test_advantage_other_than_one_scales_the_unclipped_branch() -> None:
    # on-policy, A = [2, -0.5]: per-token -A -> sequence means -2 and 0.5 -> mean -0.75
    loss, stats = grpo_loss(torch.zeros(2, 1), None, None, torch.tensor([2.0, -0.5]), torch.ones(2, 1), beta=0.0)
    assert loss.item() == pytest.approx(-0.75)
    assert stats.advantage_mean == pytest.approx(0.75)


def test_shape_errors_name_the_mismatch() -> None:
    with pytest.raises(ValueError, match="logp and mask"):
        grpo_loss(torch.zeros(2, 3), None, None, torch.zeros(2), torch.ones(2, 2))  # 2-D, wrong mask
    with pytest.raises(ValueError, match="logp and mask"):
        grpo_loss(torch.zeros(3), None, None, torch.zeros(3), torch.ones(3))  # 1-D
    with pytest.raises(ValueError, match="old_logp must match"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 2), None, torch.zeros(2), torch.ones(2, 3))


def test_group_advantages_rejects_bad_layouts() -> None:
    with pytest.raises(ValueError, match="group_size=0"):
        group_advantages(torch.zeros(4), 0)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), 2)


def test_group_of_two_hand_values() -> None:
    # [0, 2]: mean 1, unbiased std sqrt(2) -> -+1 / (sqrt(2) + 1e-4); scale "none": -+1
    adv = group_advantages(torch.tensor([0.0, 2.0]), 2)
    expected = torch.tensor([-1.0, 1.0]) / (math.sqrt(2.0) + 1e-4)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(group_advantages(torch.tensor([0.0, 2.0]), 2, scale="none"), torch.tensor([-1.0, 1.0]))


def test_advantages_of_three_groups_use_each_group_alone() -> None:
    # 3 groups of 2 (B != G, so a wrong reduction axis cannot broadcast by accident): each group is [x, x + 2]
    adv = group_advantages(torch.tensor([0.0, 2.0, 5.0, 7.0, -3.0, -1.0]), 2)
    per_group = torch.tensor([-1.0, 1.0]) / (math.sqrt(2.0) + 1e-4)
    torch.testing.assert_close(adv, per_group.repeat(3))


def test_token_logprobs_of_empty_inputs() -> None:
    assert token_logprobs(torch.zeros(0, 3, 5), torch.zeros(0, 3, dtype=torch.long)).shape == (0, 3)
    assert token_logprobs(torch.zeros(2, 0, 5), torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0)


def test_sequence_logprobs_of_two_rows_sums_each_row() -> None:
    # uniform logits over 4 tokens: every log-prob is log(1/4); row 0 has 3 valid tokens, row 1 has 1
    logits = torch.zeros(2, 3, 4)
    mask = torch.tensor([[1, 1, 1], [0, 1, 0]])
    got = sequence_logprobs(logits, torch.zeros(2, 3, dtype=torch.long), mask)
    torch.testing.assert_close(got, torch.tensor([3 * math.log(0.25), math.log(0.25)]))


def test_beta_zero_ignores_the_reference_even_when_it_overflows() -> None:
    # ref - logp = 1000: exp overflows to inf, and 0 * inf would be NaN; beta 0 must drop the KL term entirely
    loss, stats = grpo_loss(torch.zeros(1, 1), None, torch.full((1, 1), 1000.0), torch.tensor([1.0]),
                            torch.ones(1, 1), beta=0.0)
    assert loss.item() == pytest.approx(-1.0)
    assert stats.kl_mean == 0.0


def test_beta_one_adds_the_whole_kl() -> None:
    # on-policy, A = 1, ref - logp = log 2: -1 + 1 * (1 - log 2)
    loss, _ = grpo_loss(torch.zeros(1, 1), None, torch.full((1, 1), math.log(2.0)), torch.tensor([1.0]),
                        torch.ones(1, 1), beta=1.0)
    assert loss.item() == pytest.approx(-math.log(2.0))


def test_clip_fraction_with_a_positive_advantage() -> None:
    # A = +1: ratios e^-1 (below the band, but a positive advantage pushes it up: not clipped), e^0.1 (inside),
    # e^0.3 = 1.35 (above 1.2 and pushed further up: clipped, counts), padding (ignored)
    logp = torch.tensor([[-1.0, 0.1, 0.3, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = grpo_loss(logp, torch.zeros(1, 4), None, torch.tensor([1.0]), mask, beta=0.0)
    assert stats.clip_fraction == pytest.approx(1 / 3)
    # per token -min(r, clip(r)): e^-1, e^0.1, 1.2
    assert loss.item() == pytest.approx(-(math.exp(-1) + math.exp(0.1) + 1.2) / 3, rel=1e-6)


def test_microbatch_weights_add_up_to_the_whole_batch() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]])  # 6 real tokens in 4 sequences
    # 'grpo' means over sequences: rows 0-1 are 2 of 4 sequences
    assert microbatch_weight(mask, slice(0, 2), "grpo") == pytest.approx(2 / 4)
    # 'token' means over all tokens: rows 0-1 hold 4 of the 6 tokens, rows 2-3 the other 2
    assert microbatch_weight(mask, slice(0, 2), "token") == pytest.approx(4 / 6)
    assert microbatch_weight(mask, slice(2, 4), "token") == pytest.approx(2 / 6)
    assert sum(microbatch_weight(mask, slice(k, k + 1), "grpo") for k in range(4)) == pytest.approx(1.0)


def test_microbatch_token_weight_of_one_token_and_of_none() -> None:
    one = torch.tensor([[0, 1, 0], [0, 0, 0]])  # a single real token in the batch: its row carries it all
    assert microbatch_weight(one, slice(0, 1), "token") == 1.0
    assert microbatch_weight(one, slice(1, 2), "token") == 0.0
    none = torch.zeros(2, 3, dtype=torch.long)  # no real token anywhere: weight 0, not NaN
    assert microbatch_weight(none, slice(0, 2), "token") == 0.0


def test_merge_stats_weights_losses_and_averages_token_stats_by_tokens() -> None:
    a = GrpoStats(loss=1.0, policy_loss=2.0, kl_mean=0.1, clip_fraction=0.5, ratio_mean=1.0, ratio_max=1.5,
                  advantage_mean=0.2, tokens=2)
    b = GrpoStats(loss=3.0, policy_loss=4.0, kl_mean=0.4, clip_fraction=0.0, ratio_mean=2.0, ratio_max=3.0,
                  advantage_mean=0.4, tokens=6)
    merged = merge_stats([(a, 0.25), (b, 0.75)])
    assert merged.loss == pytest.approx(0.25 * 1.0 + 0.75 * 3.0)  # 2.5
    assert merged.policy_loss == pytest.approx(0.25 * 2.0 + 0.75 * 4.0)  # 3.5
    assert merged.kl_mean == pytest.approx((2 * 0.1 + 6 * 0.4) / 8)  # token-weighted: 0.325
    assert merged.clip_fraction == pytest.approx((2 * 0.5 + 6 * 0.0) / 8)
    assert merged.ratio_mean == pytest.approx((2 * 1.0 + 6 * 2.0) / 8)
    assert merged.ratio_max == 3.0  # the largest ratio of any part
    assert merged.advantage_mean == pytest.approx(0.3) and merged.tokens == 8  # the mean over the parts


def test_merge_stats_of_parts_without_tokens_gives_zeros_not_an_error() -> None:
    empty = GrpoStats(loss=0.0, policy_loss=0.0, kl_mean=0.0, clip_fraction=0.0, ratio_mean=0.0, ratio_max=0.0,
                      advantage_mean=0.0, tokens=0)
    merged = merge_stats([(empty, 0.5), (empty, 0.5)])
    assert (merged.kl_mean, merged.clip_fraction, merged.ratio_mean, merged.tokens) == (0.0, 0.0, 0.0, 0)


def test_clip_grad_norm_clips_the_global_norm_and_skips_parameters_without_grad() -> None:
    a, b, idle = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])  # global norm 5
    clip_grad_norm([a, idle, b], max_norm=1.0)
    assert float(torch.cat([a.grad, b.grad]).norm()) == pytest.approx(1.0)
    assert a.grad.tolist() == pytest.approx([0.6, 0.0]) and idle.grad is None
