"""Eval accounting: rejects tagged with their condition, rows in / scored / rejected per condition in report.md,
the CER scoring named, empty references counted apart, clips cut at max_seconds warned about and counted."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from avcot.eval.accounting import EvalReject, condition_counts, read_rejects, reason_kind
from avcot.eval.metrics import cer_by_ablation, cer_by_cue, score_cavsr
from avcot.eval.report import write_cavsr_report

SYNTH = Path(__file__).parent / "data" / "synth"
BAD = Path(__file__).parent / "data" / "bad"


# ------------------------------------------------------------------ pure pieces


def test_reason_kind_masks_paths_values_and_numbers():
    assert reason_kind("decode", "MediaError: /d/a.mp4: audio truncated: decoded 1.20 s of 4.00 s declared") == \
        "decode: MediaError: <path>: audio truncated: decoded # s of # s declared"
    assert reason_kind("manifest", "media file '/x/y z.wav' does not exist") == \
        "manifest: media file <value> does not exist"
    # two rows failing the same way count as one kind
    assert reason_kind("manifest", "media file '/a.wav' does not exist") == \
        reason_kind("manifest", "media file '/b/c.wav' does not exist")


def test_condition_counts_and_unaccounted_rows(caplog):
    rejects = [EvalReject("true", "r1", "manifest", "media file '/a.wav' does not exist"),
               EvalReject("true", "r2", "manifest", "media file '/b.wav' does not exist"),
               EvalReject("true", "r3", "decode", "MediaError: /c.mp4: has no audio stream"),
               EvalReject("black", "r1", "manifest", "media file '/a.wav' does not exist")]
    c = condition_counts("true", rows_in=10, scored=7, rejects=rejects)
    assert (c.rows_in, c.scored, c.rejected, c.unaccounted) == (10, 7, 3, 0)
    assert c.reasons == (("manifest: media file <value> does not exist", 2),
                         ("decode: MediaError: <path>: has no audio stream", 1))
    with caplog.at_level(logging.WARNING, logger="avcot.eval.accounting"):
        lost = condition_counts("black", rows_in=10, scored=7, rejects=rejects)
    assert lost.unaccounted == 2 and "2 rows unaccounted" in caplog.text


def test_read_rejects_tags_condition_and_names_bad_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"row_id": "a", "stage": "decode", "reason": "x", "source": "m.jsonl"}) + "\n\n",
                    encoding="utf-8")
    assert read_rejects(path, "random") == [EvalReject("random", "a", "decode", "x", "m.jsonl")]
    assert read_rejects(tmp_path / "absent.jsonl", "true") == []
    path.write_text('{"row_id": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"r\.jsonl: line 1: not a reject record"):
        read_rejects(path, "true")


def test_empty_references_are_counted_apart_not_in_the_corpus_cer():
    preds = [score_cavsr("a", "true", "你好", "你好吗"),  # 1 insertion over 2 tokens
             score_cavsr("b", "true", "……", "你好")]  # no reference tokens: 2 insertions, no rate
    (s,) = cer_by_ablation(preds)
    assert (s.n, s.ref_len, s.insertions, s.cer) == (2, 2, 1, pytest.approx(1 / 2))  # was 3/2 before
    assert (s.empty_refs, s.empty_ref_insertions) == (1, 2)
    (only_empty,) = cer_by_ablation(preds[1:])
    assert only_empty.cer is None and only_empty.empty_refs == 1


def test_report_names_scoring_counts_rows_and_reasons(tmp_path):
    from avcot.eval.accounting import ConditionCounts, TruncatedClip
    from avcot.media import Truncation

    preds = [score_cavsr("a", "true", "（笑）你好", "你好", scoring="wenet"),
             score_cavsr("b", "true", "，。", "你好", scoring="wenet")]  # both among wenet's 17 marks: no tokens
    counts = (ConditionCounts("true", 4, 2, 2, (("manifest: media file <value> does not exist", 2),)),
              ConditionCounts("black", 4, 0, 4, (("decode: MediaError: <path>: x", 4),)))
    long = TruncatedClip("a", (Truncation("/m/a.mp4", "audio", 720.0, 30.0),))
    by = cer_by_ablation(preds)
    files = write_cavsr_report(tmp_path, preds, by, cer_by_cue(preds), {"scoring": "wenet"}, scoring="wenet",
                               counts=counts, truncated=(long,))
    text = files.report.read_text(encoding="utf-8")
    assert "Scoring: wenet" in text and "compute-cer.py" in text
    assert "| true | 4 | 2 | 2 | 0 |" in text and "| black | 4 | 0 | 4 | 0 |" in text
    assert "| black | decode: MediaError: <path>: x | 4 |" in text
    assert "1 clips truncated" in text and "| a | audio | /m/a.mp4 | 720.0 | 30.0 |" in text
    assert "| true | 2 | 0.6000 | 0 | 3 | 0 | 5 | 0 | 1 (2) |" in text  # wenet: 3 deletions over 5 tokens
    metrics = json.loads(files.metrics.read_text(encoding="utf-8"))
    assert metrics["scoring"] == "wenet" and metrics["truncated_clips"] == 1
    assert metrics["rows"][1] == {"condition": "black", "rows_in": 4, "scored": 0, "rejected": 4,
                                  "reasons": {"decode: MediaError: <path>: x": 4}, "unaccounted": 0}
    rows = [json.loads(x) for x in files.predictions.read_text(encoding="utf-8").splitlines()]
    assert {r["scoring"] for r in rows} == {"wenet"}


def test_cli_scoring_flag():
    from avcot.eval.__main__ import build_parser

    common = ["cavsr", "--data", "m.jsonl", "--out", "o"]
    assert build_parser().parse_args(common).scoring == "avcot"
    assert build_parser().parse_args([*common, "--scoring", "wenet"]).scoring == "wenet"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*common, "--scoring", "kaldi"])


# ------------------------------------------------------------------ one real run


@pytest.fixture(scope="module")
def messy_manifest(tmp_path_factory) -> Path:
    """Three good synthetic clips (3.9 s, 3.0 s, 4.1 s), one truncated mp4 (decode fails), one missing file."""
    rows = [json.loads(x) for x in (SYNTH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:3]]
    for r in rows:
        r["video"], r["audio"] = str(SYNTH / r["video"]), str(SYNTH / r["audio"])
    rows.append({"id": "broken", "video": str(BAD / "truncated.mp4"), "audio": None, "text": "坏的视频"})
    rows.append({"id": "gone", "video": str(BAD / "no_such_clip.mp4"), "audio": None, "text": "不存在"})
    path = tmp_path_factory.mktemp("messy") / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_run_cavsr_accounts_for_every_row_per_condition(messy_manifest, tmp_path, caplog):
    from avcot.eval.cavsr import CavsrEvalSettings, run_cavsr

    out = tmp_path / "eval"
    (out / "rejects.jsonl").parent.mkdir(parents=True)
    (out / "rejects.jsonl").write_text('{"stale": "line from an earlier run"}\n', encoding="utf-8")
    settings = CavsrEvalSettings(data=str(messy_manifest), out=str(out), ablations=("audio_only",), batch_size=2,
                                 max_new_tokens=4, max_seconds=3.5, scoring="wenet", progress=False)
    with caplog.at_level(logging.WARNING, logger="avcot.eval.accounting"):
        result = run_cavsr(settings)
    assert [(c.condition, c.rows_in, c.scored, c.rejected) for c in result.counts] == \
        [("true", 5, 3, 2), ("audio_only", 5, 3, 2)]
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted((r["condition"], r["row_id"]) for r in rejects) == [
        ("audio_only", "broken"), ("audio_only", "gone"), ("true", "broken"), ("true", "gone")]
    assert all("no_such_clip.mp4" in r["reason"] for r in rejects if r["row_id"] == "gone")
    assert {r["stage"] for r in rejects if r["row_id"] == "broken"} == {"decode"}
    assert not list(out.glob("rejects.*.partial.jsonl"))  # per-condition files merged and removed
    # 3.9 s and 4.1 s clips are cut at 3.5 s, the 3.0 s one is not; one warning per clip, not per condition
    assert [t.id for t in result.truncated] == ["synth-s0-0000", "synth-s0-0002"]
    assert {n.stream for n in result.truncated[0].notes} == {"audio", "video"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "avcot.eval.accounting"]
    assert len(warnings) == 2 and "synth-s0-0000.wav" in warnings[0] and "3.9 s long" in warnings[0]
    text = result.files.report.read_text(encoding="utf-8")
    assert "| true | 5 | 3 | 2 | 0 |" in text and "| audio_only | 5 | 3 | 2 | 0 |" in text
    assert "media file <value> does not exist | 1 |" in text and "| audio_only | decode: " in text
    assert "2 clips truncated" in text and "Scoring: wenet" in text
    metrics = json.loads(result.files.metrics.read_text(encoding="utf-8"))
    assert metrics["run"]["scoring"] == "wenet" and metrics["truncated_clips"] == 2
    assert [r["rejected"] for r in metrics["rows"]] == [2, 2]


def test_condition_with_every_row_rejected_is_reported_not_fatal(tmp_path):
    from avcot.eval.cavsr import CavsrEvalSettings, run_cavsr

    rows = [{"id": f"gone{i}", "video": str(tmp_path / f"no_such_{i}.mp4"), "text": "不存在"} for i in range(2)]
    data = tmp_path / "m.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    result = run_cavsr(CavsrEvalSettings(data=str(data), out=str(tmp_path / "out"), ablations=(), progress=False))
    assert [(c.condition, c.rows_in, c.scored, c.rejected) for c in result.counts] == [("true", 2, 0, 2)]
    assert result.predictions == () and "| true | 2 | 0 | 2 | 0 |" in result.files.report.read_text(encoding="utf-8")
