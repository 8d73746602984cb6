"""Static-cache rollout: greedy tokens equal HF generate's; G copies of a prompt decode alike; EOS pads."""
from __future__ import annotations

import pytest
import torch

from avcot.generate import generate_ids
from avcot.model import LoraSettings, apply_lora, load_thinker
from avcot.speed.rollout import RolloutSettings, StaticDecoder, next_tokens
from speed_fixtures import tiny_batch


@pytest.fixture(scope="module")
def policy():
    model = apply_lora(load_thinker(seed=5), LoraSettings(dropout=0.0))
    return model.eval()


@pytest.mark.parametrize("use_audio_in_video", [False, True])
def test_greedy_equals_hf_generate_and_groups_repeat(tiny_processor, policy, use_audio_in_video):
    tok = tiny_processor.tokenizer
    batch = tiny_batch(tiny_processor, side="left", with_target=False, use_audio_in_video=use_audio_in_video)
    assert batch["attention_mask"][:, 0].tolist() == [1, 0]  # left-padded: rows of different lengths
    ref = generate_ids(policy, batch, max_new_tokens=8, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tok.pad_token_id)
    dec = StaticDecoder(policy)
    assert dec.compiled is False  # CPU: eager
    ours = dec.rollout(batch, RolloutSettings(max_new_tokens=8, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                                              pad_token_id=tok.pad_token_id))
    assert ours.tolist() == ref.tolist()
    group = dec.rollout(batch, RolloutSettings(max_new_tokens=8, group_size=3, pad_token_id=tok.pad_token_id))
    assert group.shape == (6, 8) and group.tolist() == ours.repeat_interleave(3, 0).tolist()


def test_eos_stops_a_row_like_generate(tiny_processor, policy):
    tok = tiny_processor.tokenizer
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    free = StaticDecoder(policy).rollout(batch, RolloutSettings(max_new_tokens=6, pad_token_id=tok.pad_token_id))
    eos = int(free[0, 2])  # make row 0's third token the EOS
    ref = generate_ids(policy, batch, max_new_tokens=6, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    ours = StaticDecoder(policy).rollout(batch, RolloutSettings(max_new_tokens=6, eos_token_id=eos,
                                                                pad_token_id=tok.pad_token_id))
    assert ours[0].tolist() == free[0, :3].tolist() + [tok.pad_token_id] * 3
    assert ours.tolist() == ref[:, :6].tolist()


def test_bucketed_cache_gives_the_same_tokens(tiny_processor, policy):
    """Rounding the static cache up (masked spare slots, reused across prompt lengths) changes no token."""
    from avcot.speed.rollout import cache_length

    assert cache_length(118, 8, 256) == 256 and cache_length(250, 8, 256) == 512 and cache_length(5, 3, 1) == 8
    tok = tiny_processor.tokenizer
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    exact = StaticDecoder(policy).rollout(batch, RolloutSettings(max_new_tokens=8, group_size=2, cache_bucket=1,
                                                                 pad_token_id=tok.pad_token_id))
    dec = StaticDecoder(policy)
    bucketed = RolloutSettings(max_new_tokens=8, group_size=2, cache_bucket=64, pad_token_id=tok.pad_token_id)
    longer = tiny_batch(tiny_processor, seconds=(2.0, 2.6), side="left", with_target=False)
    first = dec.rollout(longer, bucketed)  # leaves its keys/values in the spare slots of the reused cache
    assert dec.rollout(batch, bucketed).tolist() == exact.tolist()
    assert first.tolist() == StaticDecoder(policy).rollout(longer, bucketed).tolist()


def test_next_tokens_greedy_top_p_and_seeded_sampling():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    greedy = RolloutSettings()
    assert next_tokens(logits, greedy, None).tolist() == [1, 0]
    # top_p 0.5: the top token alone already covers > 0.5 of the mass in both rows, so sampling is greedy
    narrow = RolloutSettings(do_sample=True, top_p=0.5)
    for seed in range(5):
        assert next_tokens(logits, narrow, torch.Generator().manual_seed(seed)).tolist() == [1, 0]
    wide = RolloutSettings(do_sample=True, temperature=10.0)
    draws = [next_tokens(logits, wide, torch.Generator().manual_seed(s)).tolist() for s in range(40)]
    assert draws[:5] == [next_tokens(logits, wide, torch.Generator().manual_seed(s)).tolist() for s in range(5)]
    assert {d[0] for d in draws} == {0, 1, 2}  # hot temperature reaches every token


def test_right_padded_prompts_are_refused(tiny_processor, policy):
    batch = tiny_batch(tiny_processor, side="right", with_target=False)
    with pytest.raises(ValueError, match="left-padded"):
        StaticDecoder(policy).rollout(batch, RolloutSettings(max_new_tokens=2))


def test_sampling_and_prefix_match_the_grpo_sampler(tiny_processor, policy):
    """Drop-in for lit_modules.rollout.sample_group: same tokens for the same generator, same prefix."""
    grpo_rollout = pytest.importorskip("lit_modules.rollout")
    tok = tiny_processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    theirs = grpo_rollout.sample_group(policy, batch, group_size=3, max_new_tokens=6, eos_token_id=eos,
                                       pad_token_id=tok.pad_token_id, temperature=1.0,
                                       generator=torch.Generator().manual_seed(0))
    settings = RolloutSettings(max_new_tokens=6, group_size=3, do_sample=True, eos_token_id=eos,
                               pad_token_id=tok.pad_token_id)
    ids, pre = StaticDecoder(policy).rollout_with_prefill(batch, settings, generator=torch.Generator().manual_seed(0))
    assert ids.tolist() == theirs.completion_ids.tolist()
    assert torch.equal(pre.positions, theirs.prefix.positions)
    assert torch.equal(pre.next_position, theirs.prefix.next_position)
    torch.testing.assert_close(pre.embeds, theirs.prefix.embeds)


def test_compiled_decode_step_matches_eager_and_follows_weight_updates(tiny_processor):
    """`compile=True` (the CUDA default) runs here through inductor's CPU backend: same greedy tokens as the
    eager step, no recompilation for a second rollout of the same shape, and in-place LoRA updates (what the
    optimizer does between GRPO rollouts) are seen by the compiled step."""
    import torch._dynamo

    torch._dynamo.reset()
    model = apply_lora(load_thinker(seed=7), LoraSettings(dropout=0.0)).eval()
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    settings = RolloutSettings(max_new_tokens=6, group_size=2, pad_token_id=tiny_processor.tokenizer.pad_token_id)
    eager, compiled = StaticDecoder(model, compile=False), StaticDecoder(model, compile=True)
    before = eager.rollout(batch, settings)
    assert compiled.compiled and compiled.rollout(batch, settings).tolist() == before.tolist()
    with torch.no_grad():  # an optimizer step: LoRA B matrices change in place (start at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.5)
    after = eager.rollout(batch, settings)
    assert after.tolist() != before.tolist()  # the update changes what is decoded...
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert compiled.rollout(batch, settings).tolist() == after.tolist()  # ...and the compiled graph sees it
        # a prompt of another length (GRPO batches differ) lands in the same cache bucket: no recompile
        longer = tiny_batch(tiny_processor, seconds=(2.0, 2.6), side="left", with_target=False)
        assert longer["input_ids"].shape[1] != batch["input_ids"].shape[1]
        assert compiled.rollout(longer, settings).tolist() == eager.rollout(longer, settings).tolist()
