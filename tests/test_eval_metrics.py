"""Eval aggregation on hand-computed pairs: CER with S/D/I per ablation, MCQ accuracy buckets."""
from __future__ import annotations

import pytest

from avcot.eval.metrics import cer_by_ablation, cer_by_cue, score_cavsr, score_mcq, summarize_mcq

AVCOT_OUT = (
    "Multimodal Perceive:\nVisual Cues:\n黑板上写着期终考试\nAcoustic Analysis:\nwo3 men5 qu4 qi1 zhong1 kao3\n"
    "Disambiguation Reasoning:\n画面支持期终\nTranscription:\n我们去期终考"
)


def test_avcot_output_scored_on_its_transcription_section():
    p = score_cavsr("c1", "true", "我们去期中考试", AVCOT_OUT, cue="background")
    # ref 我们去期中考试 (7) vs hyp 我们去期终考: 中->终 substituted, 试 deleted
    assert p.hypothesis == "我们去期终考"
    assert (p.substitutions, p.deletions, p.insertions, p.ref_len) == (1, 1, 0, 7)
    assert p.cer == pytest.approx(2 / 7)
    assert p.homophone_errors == 1  # 中/终 both read "zhong"


def test_plain_output_and_normalisation():
    p = score_cavsr("c2", "true", "你好！", "你好吗")  # plain transcript adapter: last line is the transcript
    assert (p.substitutions, p.deletions, p.insertions, p.ref_len) == (0, 0, 1, 2)
    q = score_cavsr("c3", "true", "今天，天气很好。", "今天天气很好")
    assert q.errors == 0 and q.cer == 0.0


def test_corpus_cer_per_ablation_is_total_edits_over_total_reference():
    preds = [
        score_cavsr("c1", "true", "我们去期中考试", AVCOT_OUT, cue="background"),
        score_cavsr("c2", "true", "你好", "你好吗", cue="subtitle"),
        score_cavsr("c1", "black", "我们去期中考试", "我们去期中考试"),
        score_cavsr("c2", "black", "你好", "他好"),
    ]
    by = {s.name: s for s in cer_by_ablation(preds)}
    assert list(by) == ["true", "black"]
    # true: (2 + 1) / (7 + 2); the mean of per-row rates would be (2/7 + 1/2) / 2 instead
    assert by["true"].cer == pytest.approx(3 / 9)
    assert (by["true"].substitutions, by["true"].deletions, by["true"].insertions) == (1, 1, 1)
    assert by["black"].cer == pytest.approx(1 / 9) and by["black"].substitutions == 1
    cues = {s.name: s for s in cer_by_cue(preds)}
    assert cues["true/background"].cer == pytest.approx(2 / 7)
    assert cues["black/none"].n == 2


def test_traditional_to_simplified_optional():
    trad = score_cavsr("t", "true", "我们去学校", "我們去學校")
    assert trad.errors == 2
    assert score_cavsr("t", "true", "我们去学校", "我們去學校", t2s=True).errors == 0


def test_mcq_accuracy_by_modality_difficulty_and_format_rate():
    preds = [
        score_mcq("q1", "av", "B", "<think>sees a bike</think><answer>B</answer>", difficulty="easy"),
        score_mcq("q1", "a", "B", "The answer is B", difficulty="easy"),  # no tag: no letter, bad format
        score_mcq("q2", "av", "C", "<think>x</think><answer>A</answer>", difficulty="hard"),
        score_mcq("q2", "v", "c", "<answer>C</answer>", difficulty=None),  # right letter, no think block
    ]
    assert [p.predicted for p in preds] == ["B", "", "A", "C"]
    s = summarize_mcq(preds)
    assert (s.overall.n, s.overall.correct, s.overall.format_valid) == (4, 2, 2)
    assert s.overall.accuracy == 0.5 and s.overall.format_valid_rate == 0.5
    mod = {a.name: a for a in s.by_modality}
    assert list(mod) == ["a", "v", "av"]
    assert (mod["av"].accuracy, mod["a"].accuracy, mod["v"].accuracy) == (0.5, 0.0, 1.0)
    diff = {a.name: a for a in s.by_difficulty}
    assert list(diff) == ["easy", "hard", "unknown"]
    assert (diff["easy"].correct, diff["hard"].correct, diff["unknown"].correct) == (1, 0, 1)
