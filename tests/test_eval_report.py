"""Report files: metrics.json, predictions.jsonl, PNG plots that open, aligned worst-sample table."""
from __future__ import annotations

import json

from PIL import Image

from avcot.eval.metrics import cer_by_ablation, cer_by_cue, score_cavsr, score_mcq, summarize_mcq
from avcot.eval.report import aligned_pair, write_cavsr_report, write_mcq_report


def _png_ok(path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_aligned_pair_brackets_errors_and_bolds_homophones():
    ref, hyp = aligned_pair("我们去期中考试", "我们去期终考")
    assert ref == "我 们 去 期 **[中]** 考 [试]"
    assert hyp == "我 们 去 期 **[终]** 考 [∅]"
    ref2, hyp2 = aligned_pair("你好", "他好吗")
    assert (ref2, hyp2) == ("[你] 好 [∅]", "[他] 好 [吗]")  # 你/他: different pinyin, not bold


def test_cavsr_report_files(tmp_path):
    preds = [
        score_cavsr("a", "true", "我们去期中考试", "Transcription:\n我们去期终考", cue="background"),
        score_cavsr("b", "true", "你好", "你好", cue="subtitle"),
        score_cavsr("a", "black", "我们去期中考试", "我们"),
        score_cavsr("b", "black", "你好", "你"),
    ]
    files = write_cavsr_report(tmp_path, preds, cer_by_ablation(preds), cer_by_cue(preds), {"ckpt": "none"})
    metrics = json.loads(files.metrics.read_text(encoding="utf-8"))
    by = {s["name"]: s for s in metrics["cer_by_ablation"]}
    assert abs(by["true"]["cer"] - 2 / 9) < 1e-9 and abs(by["black"]["cer"] - 6 / 9) < 1e-9
    rows = [json.loads(x) for x in files.predictions.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and rows[0]["hypothesis"] == "我们去期终考" and abs(rows[0]["cer"] - 2 / 7) < 1e-9
    for p in files.plots:
        _png_ok(p)
    text = files.report.read_text(encoding="utf-8")
    assert "cer_by_ablation.png" in text and "**[中]**" in text
    worst = text.split("## Worst")[1]
    assert worst.index("| a | true") < worst.index("| b | true")  # highest CER first


def test_mcq_report_files(tmp_path):
    preds = [score_mcq("q1", "av", "A", "<think>t</think><answer>A</answer>", difficulty="easy"),
             score_mcq("q1", "a", "A", "<think>t</think><answer>B</answer>", difficulty="easy"),
             score_mcq("q2", "av", "C", "no tags", difficulty="hard")]
    files = write_mcq_report(tmp_path, preds, summarize_mcq(preds), {"ckpt": "none"})
    metrics = json.loads(files.metrics.read_text(encoding="utf-8"))
    assert metrics["overall"]["correct"] == 1 and abs(metrics["overall"]["format_valid_rate"] - 2 / 3) < 1e-9
    assert {m["name"]: m["accuracy"] for m in metrics["by_modality"]} == {"a": 0.0, "av": 0.5}
    assert [p.name for p in files.plots] == ["accuracy_by_modality.png", "accuracy_by_difficulty.png"]
    for p in files.plots:
        _png_ok(p)
    assert len(files.predictions.read_text(encoding="utf-8").splitlines()) == 3
    assert "Per difficulty" in files.report.read_text(encoding="utf-8")
