"""`group_by_length` on both DataModules: the train loader hands out length-grouped batches (each row once
per epoch, less padding than the plain shuffle), and the length estimate tracks the real token counts."""
from __future__ import annotations

import json

from avcot.data.examples import EpochSeededSampler
from avcot.length_batching import LengthGroupedSampler
from datamodules.cavsr import CavsrDataModule
from helpers import SYNTH, varied_rows, write_manifest

def _epoch(loader) -> list[tuple[list[str], list[int]]]:
    """(ids, real token counts) per batch of one pass."""
    return [(list(b.ids), b.inputs["attention_mask"].sum(dim=1).tolist()) for b in loader]


def _pads(batches) -> int:
    return sum(max(n) * len(n) - sum(n) for _, n in batches)


def test_cavsr_group_by_length_groups_and_estimates(tmp_path):
    manifest = write_manifest(varied_rows(12), tmp_path / "m.jsonl")
    kw = dict(train_manifest=str(manifest), val_fraction=0.0, batch_size=3, rejects_path=str(tmp_path / "r.jsonl"))
    grouped, plain = CavsrDataModule(group_by_length=True, **kw), CavsrDataModule(**kw)
    for dm in (grouped, plain):
        dm.setup("fit")
    loader = grouped.train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler)
    assert isinstance(plain.train_dataloader().sampler, EpochSeededSampler)
    assert isinstance(grouped.val_dataloader().sampler, EpochSeededSampler)  # only training is regrouped
    batches = _epoch(loader)
    ids = [i for b, _ in batches for i in b]
    assert sorted(ids) == sorted(c.id for c in grouped.records["train"])  # every row once
    assert _pads(batches) < _pads(_epoch(plain.train_dataloader()))
    # the estimate (target tokens + 25 audio tokens/s + video tokens) differs from the real length by a near-constant
    keys = dict(zip((c.id for c in grouped.records["train"]), grouped.length_keys("train")))
    offsets = [n - keys[i] for b, ns in batches for i, n in zip(b, ns)]
    assert max(offsets) - min(offsets) <= 3, offsets
    loader.sampler.set_epoch(1)
    assert [b for b, _ in _epoch(loader)] != [b for b, _ in batches]  # reshuffled per epoch


def test_mcq_group_by_length_every_item_once(tmp_path):
    from datamodules.mcq import McqDataModule

    src = SYNTH / "mcq.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    for i, r in enumerate(rows):
        for k in ("video", "audio"):
            if r[k]:
                r[k] = str(src.parent / r[k])
        r["trace"] = "<think>\n" + "看" * (5 + 40 * (i % 3)) + "\n</think>\n<answer>" + r["answer"] + "</answer>"
    manifest = write_manifest(rows, tmp_path / "mcq.jsonl")
    dm = McqDataModule(train_manifest=str(manifest), batch_size=2, num_frames=4, frame_size=112, max_seconds=2.0,
                       on_bad_row="error", group_by_length=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler)
    batches = _epoch(loader)
    assert sorted(i for b, _ in batches for i in b) == sorted(r["id"] for r in rows)
    keys = dict(zip((it.id for it in dm.records["train"]), dm.length_keys("train")))
    # video rows have 32 visual tokens more than audio-only rows; the estimate counts them, so the offsets
    # to the real lengths stay within a few tokens (word pieces at text joins, audio rounding)
    offsets = [n - keys[i] for b, ns in batches for i, n in zip(b, ns)]
    assert max(offsets) - min(offsets) <= 5, offsets
    assert len({keys[i] for b, _ in batches for i in b}) >= 3


def test_a_rows_logits_do_not_depend_on_its_batch_companions(tiny_processor):
    """What grouping changes is who shares a batch (and so the padding): a row's logits must not depend on it."""
    import torch

    from avcot.chat import collate, encode_example, model_inputs
    from avcot.model import load_thinker
    from helpers import tiny_prompt

    model = load_thinker(seed=3).eval()
    short = encode_example(tiny_processor, tiny_prompt(seed=1, seconds=1.0), "好")
    long_ = encode_example(tiny_processor, tiny_prompt(seed=0, seconds=2.0), "实验室里在做试验，今天下午还要再做一次")
    pad = tiny_processor.tokenizer.pad_token_id
    with torch.no_grad():
        alone = model(**model_inputs(collate([short], pad), with_labels=False)).logits[0]
        padded = model(**model_inputs(collate([long_, short], pad), with_labels=False)).logits[1]
    n = alone.shape[0]
    assert padded.shape[0] > n + 20  # the short row really was padded
    assert torch.allclose(padded[:n], alone, atol=1e-4)
