"""Hand-computed GRPO advantages, loss, KL and log-probs (avcot.grpo)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avcot.grpo import group_advantages, grpo_loss, k3_kl, sequence_logprobs, token_logprobs


def test_group_advantages_hand_values() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])  # [B*G] = 2 groups of 4
    adv = group_advantages(rewards, group_size=4)
    # group 1: mean 0.25, unbiased std = sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-4)
    torch.testing.assert_close(adv[:4], expected)
    torch.testing.assert_close(adv[4:], torch.zeros(4))  # equal rewards: no signal
    centred = group_advantages(rewards, 4, scale="none")[:4]
    torch.testing.assert_close(centred, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_group_of_one_has_zero_advantage() -> None:
    torch.testing.assert_close(group_advantages(torch.tensor([3.0, 5.0]), 1), torch.zeros(2))


def test_group_advantages_errors() -> None:
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), 4, scale="batch")  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=8, max_size=8), st.sampled_from([2, 4, 8]))
def test_advantages_zero_mean_per_group(values: list[float], group_size: int) -> None:
    adv = group_advantages(torch.tensor(values), group_size).view(-1, group_size)  # [B, G]
    assert torch.allclose(adv.mean(dim=1), torch.zeros(adv.shape[0]), atol=1e-4)
    assert bool((adv.abs() <= group_size).all())  # |z| <= (G-1)/sqrt(G) < G for unbiased std


def test_k3_kl_hand_value() -> None:
    # ref - logp = log 2: exp(log 2) - log 2 - 1 = 1 - log 2
    kl = k3_kl(torch.tensor([[0.0]]), torch.tensor([[math.log(2.0)]]))
    assert kl.item() == pytest.approx(1.0 - math.log(2.0))
    assert k3_kl(torch.tensor([[-1.3]]), torch.tensor([[-1.3]])).item() == 0.0


def test_ratio_e_clipped_to_1_2_with_positive_advantage() -> None:
    # logp - old = 1 -> ratio e = 2.718; A = 1 -> min(e * 1, 1.2 * 1) = 1.2, loss = -1.2, gradient 0
    logp = torch.tensor([[1.0]], requires_grad=True)  # [N=1, L=1]
    loss, stats = grpo_loss(logp, torch.zeros(1, 1), None, torch.tensor([1.0]), torch.ones(1, 1), beta=0.0)
    assert loss.item() == pytest.approx(-1.2)
    loss.backward()
    assert logp.grad.item() == 0.0  # clipped branch: no gradient
    assert stats.clip_fraction == 1.0 and stats.ratio_mean == pytest.approx(math.e)


def test_ratio_e_not_clipped_with_negative_advantage() -> None:
    # A = -1: min(-e, -1.2) = -e, loss = e; d/dlogp of e * exp(logp - old) = e
    logp = torch.tensor([[1.0]], requires_grad=True)
    loss, stats = grpo_loss(logp, torch.zeros(1, 1), None, torch.tensor([-1.0]), torch.ones(1, 1), beta=0.0)
    assert loss.item() == pytest.approx(math.e)
    loss.backward()
    assert logp.grad.item() == pytest.approx(math.e)
    assert stats.clip_fraction == 0.0


def test_on_policy_loss_is_minus_advantage_plus_kl() -> None:
    # old=None: ratio 1; per token -A + beta * (1 - log 2) when ref - logp = log 2
    logp = torch.zeros(1, 2)  # [N=1, L=2]
    ref = torch.full((1, 2), math.log(2.0))
    loss, stats = grpo_loss(logp, None, ref, torch.tensor([0.5]), torch.ones(1, 2), beta=0.1)
    assert loss.item() == pytest.approx(-0.5 + 0.1 * (1.0 - math.log(2.0)))
    assert stats.kl_mean == pytest.approx(1.0 - math.log(2.0))
    assert stats.policy_loss == pytest.approx(-0.5)


def test_grpo_vs_token_reduction_hand_values() -> None:
    # on-policy, A = [1, 2]; seq 0 has 1 valid token, seq 1 has 3: per-token loss -1 and -2
    logp = torch.zeros(2, 3)  # [N=2, L=3]
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, 2.0])
    grpo, _ = grpo_loss(logp, None, None, adv, mask, loss_type="grpo")
    token, stats = grpo_loss(logp, None, None, adv, mask, loss_type="token")
    assert grpo.item() == pytest.approx((-1.0 + -2.0) / 2)  # mean of sequence means
    assert token.item() == pytest.approx((-1.0 - 2.0 * 3) / 4)  # total over 4 tokens
    assert stats.tokens == 4


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_masked_tokens_do_not_matter(advantage: float) -> None:
    # valid token: logp - old = 0.1 -> ratio e^0.1 = 1.105 inside [0.8, 1.2]; padding holds garbage
    logp = torch.tensor([[0.3, 99.0]], requires_grad=True)
    old = torch.tensor([[0.2, -99.0]])
    ref = torch.tensor([[0.3, -1e4]])
    mask = torch.tensor([[1, 0]])
    loss, stats = grpo_loss(logp, old, ref, torch.tensor([advantage]), mask, beta=0.01)
    assert loss.item() == pytest.approx(-advantage * math.exp(0.1), rel=1e-5)  # KL is 0 on the valid token
    loss.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 1].item() == 0.0
    assert stats.ratio_max == pytest.approx(math.exp(0.1), rel=1e-5)
    assert stats.kl_mean == 0.0 and stats.tokens == 1


def test_grpo_loss_shape_errors() -> None:
    with pytest.raises(ValueError, match="advantages must be"):
        grpo_loss(torch.zeros(2, 3), None, None, torch.zeros(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="ref_logp must match"):
        grpo_loss(torch.zeros(2, 3), None, torch.zeros(2, 2), torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(torch.zeros(1, 1), None, None, torch.zeros(1), torch.ones(1, 1), loss_type="dapo")


def test_token_logprobs_matches_log_softmax_in_chunks() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)  # [N, L, V]
    tokens = torch.randint(0, 11, (3, 5))  # [N, L]
    expected = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [N, L]
    got = token_logprobs(logits, tokens, chunk_rows=4)  # 15 rows in 4 chunks
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_token_logprobs_hand_value_and_ignore() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # [1, 2, 2]: p = [1/4, 3/4], [1/2, 1/2]
    got = token_logprobs(logits, torch.tensor([[1, -100]]))
    torch.testing.assert_close(got, torch.tensor([[math.log(0.75), 0.0]]))
    seq = sequence_logprobs(logits, torch.tensor([[1, 0]]), torch.tensor([[1, 1]]))
    torch.testing.assert_close(seq, torch.tensor([math.log(0.75) + math.log(0.5)]))


def test_token_logprobs_shape_error() -> None:
    with pytest.raises(ValueError, match="logits"):
        token_logprobs(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))


def test_advantages_of_nearly_equal_rewards_still_centre() -> None:
    """The case Hypothesis found: two rewards equal to 3 digits; in fp32 their advantages' mean was 1e-4."""
    adv = group_advantages(torch.tensor([0.0, 0.0, -5.4375, -5.434312319805849]), 2).view(-1, 2)
    assert adv.dtype == torch.float32
    assert torch.allclose(adv.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert adv[1, 1] > 0 > adv[1, 0]
