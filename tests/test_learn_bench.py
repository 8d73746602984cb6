"""Pure helpers of the CAVSR learning benchmark (the benchmark itself is a script, not a test)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("learn_cavsr", Path(__file__).parents[1] / "bench" / "learn_cavsr.py")
learn = importlib.util.module_from_spec(SPEC)
sys.modules["learn_cavsr"] = learn  # dataclasses look their module up here
SPEC.loader.exec_module(learn)


def _row(sid, target, competitor, cue):
    return {"sentence_id": sid, "target": target, "competitor": competitor, "cue": cue}


def test_usable_rows_keep_only_video_decidable_clips_and_add_groups():
    rows = [_row("gongshi-s0", "公式", "公示", "subtitle"),  # same tones, visual cue: kept
            _row("shiyan-s0", "实验", "试验", "subtitle"),  # shi2 vs shi4: the audio decides, dropped
            _row("gongshi-s0", "公式", "公示", "conflict")]  # the picture shows the other word: dropped
    kept = learn.usable_rows(rows)
    assert [(r["sentence_id"], r["cue"]) for r in kept] == [("gongshi-s0", "subtitle")]
    assert kept[0]["content"] == "gongshi-s0|公式|subtitle" and kept[0]["context"] == "gongshi-s0|subtitle"


def test_avcot_trace_names_the_screen_text_and_ends_with_the_transcript():
    from avcot.traces import parse_avcot

    row = dict(_row("shichang-s1", "市场", "试场", "background"), screen_text="农贸市场",
               pinyin="shi4 chang3 li3 mian4 ren2 hen3 duo1", text="市场里面人很多")
    trace = learn.avcot_trace(row)
    assert "背景文字：农贸市场" in trace and "试场" in trace
    assert parse_avcot(trace).transcription == "市场里面人很多"


def test_split_groups_never_straddle_train_and_test():
    rows = learn.usable_rows([dict(_row(f"p{i % 3}-s{i % 2}", "公式", "公示", cue), id=str(i))
                              for i, cue in enumerate(["subtitle", "scene", "background"] * 8)])
    for column in ("content", "context", "sentence"):
        settings = learn.BenchSettings(out="", split=column, test_fraction=0.3)
        train, test = learn.split(rows, settings)
        key = "sentence_id" if column == "sentence" else column
        assert train and test and len(train) + len(test) == len(rows)
        assert not {r[key] for r in train} & {r[key] for r in test}


def test_outcome_separates_word_competitor_and_frame():
    row = dict(_row("shichang-s1", "市场", "试场", "scene"), text="市场里面人很多")
    assert learn.outcome("市场里面人很多", row) == {"word": True, "competitor": False, "frame": True, "exact": True}
    assert learn.outcome("试场里面人很多", row) == {"word": False, "competitor": True, "frame": True, "exact": False}
    assert learn.outcome("明天早上我去市场", row) == {"word": True, "competitor": False, "frame": False,
                                                      "exact": False}


def test_competitor_video_rows_swap_in_the_other_words_picture():
    rows = [dict(_row("p-s0", "公式", "公示", "scene"), id="a", video="a.mp4"),
            dict(_row("p-s0", "公示", "公式", "scene"), id="b", video="b.mp4"),
            dict(_row("p-s0", "公式", "公示", "subtitle"), id="c", video="c.mp4")]  # no partner
    swapped, unpaired = learn.competitor_video_rows(rows)
    assert [(r["id"], r["video"], r["target"]) for r in swapped] == [("a", "b.mp4", "公式"), ("b", "a.mp4", "公示")]
    assert unpaired == 1


def test_breakdown_rates_per_condition_and_cue():
    from avcot.eval.metrics import CavsrPrediction

    rows = [dict(_row("p-s0", "公式", "公示", "scene"), id="a", text="公式很好"),
            dict(_row("p-s0", "公示", "公式", "subtitle"), id="b", text="公示很好")]
    preds = [CavsrPrediction(id="a", ablation="true", reference="公式很好", output="", hypothesis="公式很好",
                             substitutions=0, deletions=0, insertions=0, ref_len=4),
             CavsrPrediction(id="b", ablation="true", reference="公示很好", output="", hypothesis="公式很好",
                             substitutions=0, deletions=0, insertions=0, ref_len=4)]
    table = learn.breakdown(preds, rows)
    assert table["true"]["all"] == {"n": 2, "word": 0.5, "competitor": 0.5, "frame": 1.0, "exact": 0.5}
    assert table["true"]["subtitle"]["competitor"] == 1.0 and table["true"]["scene"]["word"] == 1.0


def test_summary_table_has_a_row_per_condition_with_its_numbers():
    rates = {"n": 2, "word": 0.5, "competitor": 0.25, "frame": 1.0, "exact": 0.5}
    summary = {"date": "d", "command": "c", "machine": "m", "clips_train": 4, "clips_test": 2, "train_seconds": 1,
               "total_seconds": 2, "cer": {"true": 0.0412, "random": 0.2},
               "outcomes": {"true": {"all": rates, "scene": dict(rates, word=1.0)},
                            "random": {"all": dict(rates, word=0.0), "scene": dict(rates, word=0.0)}}}
    lines = learn.summary_table(summary).splitlines()
    assert "| true | 0.041 | 0.50 | 0.25 | 1.00 | 1.00 |" in lines
    assert "| random | 0.200 | 0.00 | 0.25 | 1.00 | 0.00 |" in lines
    assert any(line.endswith("| scene |") for line in lines)


def test_parse_voices():
    assert learn.parse_voices("120:40, 160:60") == ((120, 40), (160, 60))
    assert learn.parse_voices("") == ()
    with pytest.raises(ValueError, match="rate:pitch"):
        learn.parse_voices("fast")


@pytest.mark.slow  # synthesises ~216 clips and runs five eval passes: ~2-3 min on 2 cores
def test_benchmark_runs_end_to_end_and_reports_every_condition(tmp_path):
    settings = learn.BenchSettings(out=str(tmp_path), renders=1, steps=3, warmup=1, max_new_tokens=8, workers=2)
    summary = learn.run(settings)
    conditions = {"true", "black", "random", "audio_only", "competitor_video"}
    assert set(summary["cer"]) == conditions and set(summary["outcomes"]) == conditions
    assert summary["clips_train"] == summary["clips_test"] == 108  # 9 same-tone pairs x 2 templates x 2 x 3 cues
    assert summary["clips_without_competitor_video"] == 0
    assert summary["outcomes"]["true"]["all"]["n"] == 108
    saved = (tmp_path / "results.json").read_text(encoding="utf-8")
    assert '"competitor_video"' in saved and (tmp_path / "model" / "config.json").is_file()
    assert "| competitor_video |" in (tmp_path / "summary.md").read_text(encoding="utf-8")
