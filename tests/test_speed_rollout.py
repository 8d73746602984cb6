"""Static-cache rollout: greedy tokens equal HF generate's; G copies of a prompt decode alike; EOS pads."""
from __future__ import annotations

import pytest
import torch

from avcot.chat import model_inputs
from avcot.model import LoraSettings, apply_lora, load_thinker
from avcot.rollout import RolloutEngine, RolloutSettings, next_tokens
from helpers import tiny_batch


def hf_generate_ids(model, batch, **kw) -> torch.Tensor:
    """HF `generate`'s new tokens (the independent reference)."""
    with torch.no_grad():
        out = model.generate(**model_inputs(batch, with_labels=False), do_sample=False, **kw)
    return out[:, batch["input_ids"].shape[1]:]


def static(**kw) -> RolloutSettings:
    return RolloutSettings(static=True, **kw)


def static_ids(model, batch, settings: RolloutSettings, engine: RolloutEngine | None = None, **kw) -> torch.Tensor:
    return (engine or RolloutEngine(model)).sample(batch, settings, **kw).completion_ids


@pytest.fixture(scope="module")
def policy():
    model = apply_lora(load_thinker(seed=5), LoraSettings(dropout=0.0))
    return model.eval()


@pytest.mark.parametrize("use_audio_in_video", [False, True])
def test_greedy_equals_hf_generate_and_groups_repeat(tiny_processor, policy, use_audio_in_video):
    tok = tiny_processor.tokenizer
    batch = tiny_batch(tiny_processor, side="left", with_target=False, use_audio_in_video=use_audio_in_video)
    assert batch["attention_mask"][:, 0].tolist() == [1, 0]  # left-padded: rows of different lengths
    ref = hf_generate_ids(policy, batch, max_new_tokens=8, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                          pad_token_id=tok.pad_token_id)
    engine = RolloutEngine(policy)
    settings = static(max_new_tokens=8, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id)
    assert engine.compiles(settings) is False  # CPU: eager
    ours = static_ids(policy, batch, settings, engine)
    assert ours.tolist() == ref.tolist()
    group = static_ids(policy, batch, static(max_new_tokens=8, group_size=3, pad_token_id=tok.pad_token_id), engine)
    assert group.shape == (6, 8) and group.tolist() == ours.repeat_interleave(3, 0).tolist()


def test_eos_stops_a_row_like_generate(tiny_processor, policy):
    tok = tiny_processor.tokenizer
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    free = static_ids(policy, batch, static(max_new_tokens=6, pad_token_id=tok.pad_token_id))
    eos = int(free[0, 2])  # make row 0's third token the EOS
    ref = hf_generate_ids(policy, batch, max_new_tokens=6, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    ours = static_ids(policy, batch, static(max_new_tokens=6, eos_token_id=eos, pad_token_id=tok.pad_token_id))
    assert ours[0].tolist() == free[0, :3].tolist() + [tok.pad_token_id] * 3
    assert ours.tolist() == ref[:, :6].tolist()


def test_bucketed_cache_gives_the_same_tokens(tiny_processor, policy):
    """Rounding the static cache up (masked spare slots, reused across prompt lengths) changes no token."""
    from avcot.rollout import cache_length

    assert cache_length(118, 8, 256) == 256 and cache_length(250, 8, 256) == 512 and cache_length(5, 3, 1) == 8
    tok = tiny_processor.tokenizer
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    exact = static_ids(policy, batch, static(max_new_tokens=8, group_size=2, cache_bucket=1,
                                             pad_token_id=tok.pad_token_id))
    engine = RolloutEngine(policy)
    bucketed = static(max_new_tokens=8, group_size=2, cache_bucket=64, pad_token_id=tok.pad_token_id)
    longer = tiny_batch(tiny_processor, seconds=(2.0, 2.6), side="left", with_target=False)
    first = static_ids(policy, longer, bucketed, engine)  # leaves its keys/values in the reused cache's spare slots
    assert static_ids(policy, batch, bucketed, engine).tolist() == exact.tolist()
    assert first.tolist() == static_ids(policy, longer, bucketed).tolist()


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
    for settings in (static(max_new_tokens=2), RolloutSettings(max_new_tokens=2)):
        with pytest.raises(ValueError, match="left-padded"):
            RolloutEngine(policy).sample(batch, settings)


def test_static_sampling_and_prefill_match_the_growing_cache(tiny_processor, policy):
    """The static cache is an option of the one engine: same tokens for the same generator, same prefill."""
    tok = tiny_processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    runs = [RolloutEngine(policy).sample(batch, RolloutSettings(max_new_tokens=6, group_size=3, do_sample=True,
                                                                eos_token_id=eos, pad_token_id=tok.pad_token_id,
                                                                static=flag),
                                         generator=torch.Generator().manual_seed(0))
            for flag in (False, True)]
    growing, fixed = runs
    assert fixed.completion_ids.tolist() == growing.completion_ids.tolist()
    assert len({tuple(r) for r in fixed.completion_ids.tolist()}) > 2  # really sampled, not greedy
    for name in ("input_ids", "mask", "embeds", "positions", "next_position"):
        assert torch.equal(getattr(fixed.prefill, name), getattr(growing.prefill, name)), name


def test_compiled_decode_step_matches_eager_and_follows_weight_updates(tiny_processor):
    """`compile=True` (the CUDA default) runs here through inductor's CPU backend: same greedy tokens as the
    eager step, no recompilation for a second rollout of the same shape, and in-place LoRA updates (what the
    optimizer does between GRPO rollouts) are seen by the compiled step."""
    import torch._dynamo

    torch._dynamo.reset()
    model = apply_lora(load_thinker(seed=7), LoraSettings(dropout=0.0)).eval()
    batch = tiny_batch(tiny_processor, side="left", with_target=False)
    pad = tiny_processor.tokenizer.pad_token_id
    eager_settings, compiled_settings = (static(max_new_tokens=6, group_size=2, pad_token_id=pad, compile=flag)
                                         for flag in (False, True))
    eager, compiled = RolloutEngine(model), RolloutEngine(model)
    before = static_ids(model, batch, eager_settings, eager)
    assert compiled.compiles(compiled_settings)
    assert static_ids(model, batch, compiled_settings, compiled).tolist() == before.tolist()
    with torch.no_grad():  # an optimizer step: LoRA B matrices change in place (start at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.5)
    after = static_ids(model, batch, eager_settings, eager)
    assert after.tolist() != before.tolist()  # the update changes what is decoded...
    with torch._dynamo.config.patch(error_on_recompile=True):
        # ...and the compiled graph sees it
        assert static_ids(model, batch, compiled_settings, compiled).tolist() == after.tolist()
        # a prompt of another length (GRPO batches differ) lands in the same cache bucket: no recompile
        longer = tiny_batch(tiny_processor, seconds=(2.0, 2.6), side="left", with_target=False)
        assert longer["input_ids"].shape[1] != batch["input_ids"].shape[1]
        assert (static_ids(model, longer, compiled_settings, compiled).tolist()
                == static_ids(model, longer, eager_settings, eager).tolist())
