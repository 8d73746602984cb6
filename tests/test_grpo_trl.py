"""GRPOModule's loss equals TRL's GRPOTrainer._compute_loss on the same log-probs and advantages.

TRL's loss is a method of a full trainer. It is called here on a GRPOTrainer subclass whose __init__ only
sets the attributes `_compute_loss` reads (taken from a real `GRPOConfig`, so TRL's own defaults apply) and
whose per-token log-prob hook returns the crafted log-probs: the loss arithmetic that runs is TRL's own.
TRL is a dev dependency used by this test only. Compared against TRL's classic GRPO KL term
(`use_bias_correction_kl=False`); TRL's newer default weights the KL by the importance ratio.
"""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch

trl = pytest.importorskip("trl")


class _Accelerator:
    """The two collective calls _compute_loss makes, for a single process."""

    num_processes = 1

    def reduce(self, x, reduction="sum"):
        return x

    def gather(self, x):
        return x

    gather_for_metrics = gather


def _trl_loss(tmp_path, *, logp, old_logp, ref_logp, advantages, mask, loss_type, beta, eps):
    from trl import GRPOConfig, GRPOTrainer

    # use_bias_correction_kl=False: TRL >= 1.x multiplies the KL by the (differentiable) ratio by default
    # (DeepSeek-V3.2); the AVRT paper and avcot.grpo use the classic GRPO k3 KL term, which TRL keeps as this option.
    args = GRPOConfig(output_dir=str(tmp_path), loss_type=loss_type, beta=beta, epsilon=eps, report_to=[],
                      use_cpu=True, bf16=False, use_bias_correction_kl=False)

    class LossOnly(GRPOTrainer):
        current_gradient_accumulation_steps = 1

        def __init__(self):  # only what _compute_loss reads; no model, no data
            self.args = args
            self.loss_type, self.beta = args.loss_type, args.beta
            self.epsilon_low = args.epsilon
            self.epsilon_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
            self.importance_sampling_level = args.importance_sampling_level
            self.off_policy_mask_threshold = args.off_policy_mask_threshold
            self.top_entropy_quantile = args.top_entropy_quantile
            self.use_vllm, self.aux_loss_enabled, self._entropy_bonus_enabled = False, False, False
            self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
            self.accelerator = _Accelerator()
            self.model = torch.nn.Linear(1, 1)  # .training == True: the "train" branch

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, **kw):
            return logp, torch.zeros_like(logp), None

    n, length = logp.shape
    inputs = {"prompt_ids": torch.zeros(n, 3, dtype=torch.long), "prompt_mask": torch.ones(n, 3, dtype=torch.long),
              "completion_ids": torch.zeros(n, length, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "ref_per_token_logps": ref_logp}
    if old_logp is not None:
        inputs["old_per_token_logps"] = old_logp
    trainer = LossOnly()
    return trainer._compute_loss(None, inputs), trainer._metrics["train"]


@pytest.fixture(scope="module")
def module_factory():
    from lit_modules.grpo import GRPOModule

    return lambda **kw: GRPOModule(base="tiny", **kw)


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)
    n, length = 8, 7  # two prompts x G=4
    logp = (-torch.rand(n, length, generator=g) * 3).requires_grad_(True)  # [N, L]
    old = logp.detach() + 0.4 * torch.randn(n, length, generator=g)  # ratios well outside 1 +- 0.2
    ref = logp.detach() + 0.3 * torch.randn(n, length, generator=g)
    mask = (torch.rand(n, length, generator=g) > 0.25).long()
    mask[:, 0] = 1
    rewards = torch.tensor([1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 0.5])
    return logp, old, ref, mask, rewards


@pytest.mark.parametrize("loss_type,trl_type", [("grpo", "grpo"), ("token", "bnpo")])
@pytest.mark.parametrize("with_old", [False, True])
def test_module_loss_and_gradient_equal_trl(tmp_path, module_factory, loss_type, trl_type, with_old):
    from avcot.grpo import group_advantages

    logp, old, ref, mask, rewards = _case(seed=3)
    adv = group_advantages(rewards, 4)
    module = module_factory(beta=0.01, clip_eps=0.2, loss_type=loss_type, group_size=4)
    ours, stats = module.policy_loss(logp, old if with_old else None, ref, adv, mask)
    (g_ours,) = torch.autograd.grad(ours, logp)
    theirs, metrics = _trl_loss(tmp_path, logp=logp, old_logp=old if with_old else None, ref_logp=ref,
                                advantages=adv, mask=mask, loss_type=trl_type, beta=0.01, eps=0.2)
    (g_theirs,) = torch.autograd.grad(theirs, logp)
    assert abs(ours.item() - theirs.item()) < 1e-6
    assert torch.allclose(g_ours, g_theirs, atol=1e-6, rtol=0)
    assert abs(stats.kl_mean - metrics["kl"][0]) < 1e-6
    assert abs(stats.clip_fraction - metrics["clip_ratio/region_mean"][0]) < 1e-6
    if with_old:
        assert stats.clip_fraction > 0  # the case really exercises clipping


def test_trl_comparison_can_fail(tmp_path, module_factory):
    """A different clip range gives a different loss: the comparison above is not vacuous."""
    from avcot.grpo import group_advantages

    logp, old, ref, mask, rewards = _case(seed=3)
    adv = group_advantages(rewards, 4)
    ours, _ = module_factory(clip_eps=0.2).policy_loss(logp, old, ref, adv, mask)
    theirs, _ = _trl_loss(tmp_path, logp=logp, old_logp=old, ref_logp=ref, advantages=adv, mask=mask,
                          loss_type="grpo", beta=0.01, eps=0.1)
    assert abs(float(ours) - float(theirs)) > 1e-4
