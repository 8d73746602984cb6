"""The typed batch (avcot.batch): one collate for both DataModules, device moves, pickling, what rewards see."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from helpers import tiny_prompt

from avcot.batch import Batch, collate_batch
from avcot.chat import collate, encode_example
from avcot.data.examples import Example, Skipped, SkippedBatch
from avcot.records import Reject
from avcot.rewards import RewardInputs, combine_rewards, format_reward

README = Path(__file__).resolve().parent.parent / "README.md"


def _examples(processor, n: int = 2, references=("甲", "乙")) -> list[Example]:
    return [Example(id=f"r{i}", encoded=encode_example(processor, tiny_prompt(seed=i), None), reference=references[i])
            for i in range(n)]


def _skipped(line: int) -> Skipped:
    return Skipped(line, Reject(row_id=f"bad{line}", stage="decode", reason="unreadable video"))


def test_collate_batch_keeps_rows_in_order_and_carries_the_skipped(tiny_processor):
    examples = _examples(tiny_processor)
    pad = tiny_processor.tokenizer.pad_token_id
    batch = collate_batch([examples[0], _skipped(7), examples[1]], pad, padding_side="left")
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.ids == ("r0", "r1") and batch.references == ("甲", "乙") and batch.answers is None
    assert [s.line for s in batch.skipped] == [7] and batch.media_keys is None
    plain = collate([e.encoded for e in examples], pad, padding_side="left")  # the tensors are collate's own
    assert plain.keys() == batch.inputs.keys()
    assert all(torch.equal(v, batch.inputs[k]) for k, v in plain.items() if isinstance(v, torch.Tensor))
    assert collate_batch([_skipped(1), _skipped(2)], pad) == SkippedBatch((_skipped(1), _skipped(2)))


def test_mcq_batches_expose_the_gold_letters_and_hash_media_fills_the_keys(tiny_processor):
    from avcot.thinker.encoder_cache import media_keys

    examples = _examples(tiny_processor, references=("B", "D"))
    batch = collate_batch(examples, tiny_processor.tokenizer.pad_token_id, hash_media=True, gold_letters=True)
    assert batch.answers == ("B", "D") == batch.references
    assert batch.media_keys == media_keys(batch.inputs) and batch.media_keys["video"]


def test_batch_moves_pickles_and_goes_through_lightnings_transfer(tiny_processor):
    from lightning.fabric.utilities.apply_func import move_data_to_device

    batch = collate_batch(_examples(tiny_processor), tiny_processor.tokenizer.pad_token_id)
    half = batch.to("cpu", torch.float16)
    assert half.inputs["pixel_values_videos"].dtype == torch.float16
    assert half.inputs["input_ids"].dtype == torch.long and half.ids == batch.ids
    assert batch.inputs["pixel_values_videos"].dtype == torch.float32  # the original is left as it was
    moved = move_data_to_device(batch, torch.device("cpu"))  # what Lightning's default hook calls
    assert isinstance(moved, Batch) and moved.ids == batch.ids
    again = pickle.loads(pickle.dumps(batch))  # DataLoader workers send batches pickled
    assert again.ids == batch.ids and torch.equal(again.inputs["input_ids"], batch.inputs["input_ids"])


def test_a_batch_refuses_fields_of_other_lengths():
    with pytest.raises(ValueError, match="batch of 2 ids has 1 references"):
        Batch(inputs={}, ids=("a", "b"), references=("x",))
    with pytest.raises(ValueError, match="2 references and 3 answers"):
        Batch(inputs={}, ids=("a", "b"), references=("x", "y"), answers=("A", "B", "C"))


def test_rewards_see_only_the_reward_fields(tiny_processor):
    """The media keys, ids and model inputs of a batch never reach a reward."""
    seen = []

    def spy(completions, **kw):
        seen.append(kw)
        return [0.0] * len(completions)

    batch = collate_batch(_examples(tiny_processor, references=("A", "C")), tiny_processor.tokenizer.pad_token_id,
                          hash_media=True, gold_letters=True)
    combine_rewards([(spy, 1.0)], ["x"] * 4, batch.reward_inputs(2))
    assert seen == [{"references": ("A", "A", "C", "C"), "answers": ("A", "A", "C", "C")}]


def test_the_readme_reward_example_runs():
    """The README's example of writing a reward works as written with the keywords rewards are given."""
    section = README.read_text().split("### Writing a reward", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the repository's own README
    (name,) = [k for k in scope if k.endswith("_reward")]
    completions = ["<think>x</think><answer>B</answer>B", "B", "A"]
    total, per = combine_rewards([(format_reward, 1.0), (scope[name], 0.5)], completions,
                                 RewardInputs(references=("B", "B", "B"), answers=("B", "B", "B")))
    assert per[name] == [1.0, 1.0, 0.0] and total == [0.5, 0.5, 0.0]
