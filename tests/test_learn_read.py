"""The reading pre-training stage of the CAVSR learning benchmark (bench/learn_read.py)."""
from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SPEC = importlib.util.spec_from_file_location("bench.learn_read", ROOT / "bench" / "learn_read.py")
read = importlib.util.module_from_spec(SPEC)
sys.modules["bench.learn_read"] = read  # dataclasses look their module up here
SPEC.loader.exec_module(read)


def test_reading_specs_are_the_sign_and_subtitle_contents_only_reading_decides():
    from avcot.phonetics import pinyin

    specs = read.reading_specs()
    assert specs and {s.cue for s in specs} == set(read.READ_CUES)
    assert all(pinyin(s.target) == pinyin(s.competitor) and s.target in s.screen_text for s in specs)
    keep = {f"{s.sentence_id}|{s.target}|{s.cue}" for s in specs[:3]}
    assert [s.id for s in read.reading_specs(keep)] == [s.id for s in specs[:3]]  # held-out contents stay out
    with pytest.raises(ValueError, match="no sign or subtitle content"):
        read.reading_specs({"nothing|x|background"})


def test_every_sample_is_a_fresh_rendering_and_the_two_words_look_different():
    spec = read.reading_specs()[0]
    rng = random.Random(0)
    a, b = read.render_sample(spec, rng, 112), read.render_sample(spec, rng, 112)
    assert a.shape == (2, 112, 112, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)  # a new position/tint/font size each time
    other = next(s for s in read.reading_specs() if s.sentence_id == spec.sentence_id and s.cue == spec.cue
                 and s.target == spec.competitor)
    same_look = read.render_sample(other, random.Random(1), 112) - read.render_sample(spec, random.Random(1), 112)
    assert np.abs(same_look.astype(int)).sum() > 0  # same variation, other word: only the glyph differs


def test_random_text_samples_keep_the_cue_and_length_and_use_only_trained_characters():
    specs = read.reading_specs()[:6]
    pool = read.char_pool(specs)
    assert len(pool) == len(set(pool)) and set(pool) == {c for s in specs for c in s.screen_text}
    rng = random.Random(0)
    drawn = [read.sample_spec(specs, rng, 1.0, pool) for _ in range(40)]
    by_id = {s.id: s for s in specs}
    for d in drawn:
        assert len(d.screen_text) == len(by_id[d.id].screen_text) and set(d.screen_text) <= set(pool)
        assert d.cue == by_id[d.id].cue
    assert sum(d.screen_text != by_id[d.id].screen_text for d in drawn) >= 38  # random strings, not the texts
    assert all(read.sample_spec(specs, rng, 0.0, pool) in specs for _ in range(20))


def test_minimal_pairs_show_both_words_under_one_variation():
    specs = read.reading_specs()[:6]
    pool = read.char_pool(specs)
    drawn = read.batch_specs(specs, random.Random(0), 5, 0.0, pool, pairs=True)
    assert len(drawn) == 5
    for shown, other in (drawn[0:2], drawn[2:4]):
        assert shown.variation == other.variation and shown.id == other.id
        assert other.screen_text == read.competitor_text(shown) != shown.screen_text
        look = read.render_spec(other, 112).astype(int) - read.render_spec(shown, 112).astype(int)
        rows = np.flatnonzero(np.abs(look).sum(axis=(0, 2, 3)))
        assert rows.size and rows.max() - rows.min() < 112 // 3  # one band of glyphs differs, not the picture
    singles = read.batch_specs(specs, random.Random(0), 5, 0.0, pool)
    assert len({s.variation for s in singles}) == 5  # without pairs every sample has its own variation


def test_competitor_text_swaps_only_the_spoken_word():
    for spec in read.reading_specs():
        other = read.competitor_text(spec)
        assert other != spec.screen_text and spec.competitor in other
        assert other.replace(spec.competitor, spec.target) == spec.screen_text


def test_reading_check_scores_each_cue_by_forced_choice():
    import torch

    from avcot.processor import load_processor

    class Reader(torch.nn.Module):  # a stand-in thinker whose loss is low exactly for the shown text
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))  # where the check reads device and dtype from

        def forward(self, input_ids, labels, **_):
            text = processor.tokenizer.decode(labels[labels != -100])
            return type("Out", (), {"loss": torch.tensor(0.0 if text.startswith(shown[0]) else 1.0)})()

    processor, specs = load_processor("tiny"), read.reading_specs()[:4]
    shown = [None]
    right = {}
    for spec in specs:
        shown[0] = spec.screen_text
        right.update(read.reading_check(Reader(), processor, [spec], 0, 56))
    assert right == {spec.cue: 1.0 for spec in specs}
    shown[0] = "nothing shown"
    assert set(read.reading_check(Reader(), processor, specs, 0, 56).values()) == {0.0}


def test_a_batch_asks_for_the_screen_text_and_trains_on_it_only():
    from avcot.processor import load_processor

    processor = load_processor("tiny")
    specs = read.reading_specs()[:1]
    batch = read.reading_batch(processor, specs, random.Random(0), 2, 56)
    assert batch["video_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]  # two frames = one temporal patch
    labels = batch["labels"][0]
    target = processor.tokenizer.decode(labels[labels != -100])
    assert target == specs[0].screen_text + "<|im_end|>"
    prompt = processor.tokenizer.decode(batch["input_ids"][0][labels == -100])
    assert read.READ_INSTRUCTION in prompt


def test_training_moves_the_vision_tower_and_saves_a_loadable_base(tmp_path):
    import torch

    from avcot.model import load_thinker
    from avcot.processor import load_processor

    settings = read.ReadSettings(out=str(tmp_path), steps=2, batch_size=2, warmup=1, frame_size=56, log_every=1)
    result = read.train_reading(settings, read.reading_specs()[:2], progress=False)
    model_dir = result.model
    before, after = load_thinker("tiny").state_dict(), load_thinker(str(model_dir)).state_dict()
    key = next(k for k in before if k.endswith("visual.patch_embed.proj.weight"))
    assert not torch.equal(before[key], after[key])  # load_thinker froze it; this stage trains it
    assert load_processor(str(model_dir)).tokenizer.vocab_size == load_processor("tiny").tokenizer.vocab_size
    log = (tmp_path / "loss.csv").read_text(encoding="utf-8").splitlines()
    assert log[0] == "step,loss,seconds" and [r.split(",")[0] for r in log[1:]] == ["0", "1"]
    check = json.loads((tmp_path / "reading_check.json").read_text(encoding="utf-8"))
    assert set(check) == {s.cue for s in read.reading_specs()[:2]} and all(0 <= v <= 1 for v in check.values())
    assert result.reading_check == check and result.final_loss == float(log[-1].split(",")[1])


def load_learn_cavsr(monkeypatch):
    spec = importlib.util.spec_from_file_location("learn_cavsr", ROOT / "bench" / "learn_cavsr.py")
    learn = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "learn_cavsr", learn)
    spec.loader.exec_module(learn)
    return learn


def test_learn_cavsr_read_stage_reads_only_trained_contents_and_becomes_the_base(tmp_path, monkeypatch):
    learn = load_learn_cavsr(monkeypatch)
    seen = []
    real = read.train_reading
    monkeypatch.setattr(read, "train_reading", lambda s, specs, *a: seen.extend(specs) or real(s, specs, *a))
    one = read.reading_specs()[0]
    rows = [{"content": f"{one.sentence_id}|{one.target}|{one.cue}"}, {"content": "other-s9|x|scene"}]
    settings = learn.BenchSettings(out=str(tmp_path), read_steps=1, frame_size=56)
    new, [record] = learn.read_stage(settings, learn.reading_stages(settings), rows)
    assert [s.id for s in seen] == [one.id]
    assert new.base == record["model"] == str(tmp_path / "read" / "model") and record["steps"] == 1
    assert (tmp_path / "read" / "model" / "config.json").is_file() and record["final_loss"] > 0
    assert set(record["reading_check"]) == {one.cue}
    assert record["lr"] == read.ReadSettings.lr and record["subtitle_share"] == 0


def test_read_plan_parses_each_stage_and_names_the_one_that_does_not():
    assert read.read_plan(0, "") == [] and read.read_plan(3000) == [read.ReadStage(3000)]
    assert read.read_plan(plan="3000, 200@1e-3:0.75,5:0.5") == [
        read.ReadStage(3000, read.ReadSettings.lr, 0.0), read.ReadStage(200, 1e-3, 0.75), read.ReadStage(5, 2e-3, 0.5)]
    assert read.read_plan(plan=read.READ_RECIPE) == [  # run 40's three stages (bench/RESULTS.md)
        read.ReadStage(3000, 2e-3, 0.0), read.ReadStage(3000, 1e-3, 0.75), read.ReadStage(3000, 1e-3, 0.0)]
    with pytest.raises(ValueError, match=r"stage 2 \('x@1e-3'\) is not STEPS"):
        read.read_plan(plan="10,x@1e-3")
    with pytest.raises(ValueError, match=r"stage 1 \('10:1.5'\) needs steps >= 1"):
        read.read_plan(plan="10:1.5")
    with pytest.raises(ValueError, match="stage 3"):
        read.read_plan(plan="1,1,0")
    with pytest.raises(ValueError, match="not both"):
        read.read_plan(5, "10")


def test_a_plan_trains_each_stage_from_the_last_ones_model_with_its_own_draws(tmp_path, monkeypatch):
    calls = []

    def fake(settings, specs, progress=True):  # what each stage would train, and a model it would leave
        calls.append(settings)
        return read.ReadResult(Path(settings.out) / "model", 0.5, {"background": 1.0})

    monkeypatch.setattr(read, "train_reading", fake)
    first = read.ReadSettings(out=str(tmp_path / "read"), base="tiny", seed=7, frame_size=56)
    done = read.train_plan(first, read.read_plan(plan="3,2@1e-3:0.75"), read.reading_specs()[:2])
    assert [s.out for s in calls] == [str(tmp_path / "read"), str(tmp_path / "read2")]
    assert [s.base for s in calls] == ["tiny", str(tmp_path / "read" / "model")]  # stage 2 from stage 1's model
    assert [(s.steps, s.lr, s.subtitle_share, s.seed) for s in calls] == [(3, 2e-3, 0.0, 7), (2, 1e-3, 0.75, 8)]
    assert [stage.steps for stage, _, _ in done] == [3, 2] and all(secs >= 0 for _, _, secs in done)


def test_learn_cavsr_refuses_a_bad_plan_before_generating_anything(tmp_path, monkeypatch):
    learn = load_learn_cavsr(monkeypatch)
    monkeypatch.setattr(learn, "make_data", lambda s: pytest.fail("synthesised before checking the plan"))
    with pytest.raises(SystemExit, match=r"stage 2 \('3000@fast'\)"):
        learn.run(learn.BenchSettings(out=str(tmp_path), read_plan="3000,3000@fast"))
    with pytest.raises(SystemExit, match="not both"):
        learn.main(["--out", str(tmp_path), "--read-steps", "5", "--read-plan", "5"])


def test_the_summary_names_every_reading_stage():
    from bench.learn_cavsr_report import read_line

    stage = {"model": "m", "steps": 3000, "train_seconds": 800.0, "final_loss": 0.02,
             "reading_check": {"background": 0.97, "subtitle": 0.86}}
    old = read_line({"read": stage})  # a results.json from before --read-plan: its one stage as a dict
    assert "3000 steps, 800.0 s, last loss 0.020" in old and "subtitle 0.86" in old
    two = read_line({"read": [stage | {"lr": 2e-3, "subtitle_share": 0.0},
                              stage | {"steps": 500, "lr": 1e-3, "subtitle_share": 0.75}]})
    assert "3000 steps at lr 0.002, 800.0 s" in two and "; then 500 steps at lr 0.001, 0.75 subtitles, " in two
    assert read_line({}) == ""


def test_subtitle_share_weights_the_draw_towards_subtitles():
    specs = read.reading_specs()
    assert read.weighted_specs(specs, 0.0) is specs  # the default draws every content alike
    rng = random.Random(0)
    drawn = read.weighted_specs(specs, 0.75)
    share = sum(rng.choice(drawn).cue == "subtitle" for _ in range(4000)) / 4000
    assert abs(share - 0.75) < 0.03, share
    assert {s.id for s in drawn} == {s.id for s in specs}  # nothing dropped, nothing new
    fewer = read.weighted_specs(specs, 0.3)  # under one half: the sign contents are the ones repeated
    assert abs(sum(s.cue == "subtitle" for s in fewer) / len(fewer) - 0.3) < 0.03
    with pytest.raises(ValueError, match=r"needs a value in \(0, 1\)"):
        read.weighted_specs(specs, 1.0)
    with pytest.raises(ValueError, match="0 here"):
        read.weighted_specs([s for s in specs if s.cue != "subtitle"], 0.5)
