"""MCQ eval end to end on two committed synthetic items with the tiny random model (in process)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from avcot.eval.mcq import McqEvalSettings, parse_modalities, run_mcq

SYNTH = Path(__file__).parent / "data" / "synth"


def test_parse_modalities():
    assert parse_modalities("av, a,av") == ("av", "a")
    assert parse_modalities("") == ("a", "v", "av")
    with pytest.raises(ValueError, match="unknown modality"):
        parse_modalities("x")


def test_run_mcq_writes_per_modality_metrics(tmp_path):
    rows = [json.loads(x) for x in (SYNTH / "mcq.jsonl").read_text(encoding="utf-8").splitlines()[:2]]
    for r in rows:  # one video item and one audio item
        for key in ("video", "audio"):
            if r.get(key):
                r[key] = str(SYNTH / r[key])
    gone = dict(rows[1], id="gone", audio=str(tmp_path / "no_such.wav"), video=None)  # rejected, counted
    data = tmp_path / "mcq.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [*rows, gone]), encoding="utf-8")
    result = run_mcq(McqEvalSettings(data=str(data), out=str(tmp_path / "out"), modalities=("av", "a"),
                                     batch_size=1, max_new_tokens=4, num_frames=4, progress=False))
    assert sorted((p.id, p.modality) for p in result.predictions) == sorted(
        (r["id"], m) for r in rows for m in ("av", "a"))
    assert all(p.answer == next(r["answer"] for r in rows if r["id"] == p.id) for p in result.predictions)
    metrics = json.loads(result.files.metrics.read_text(encoding="utf-8"))
    assert [m["name"] for m in metrics["by_modality"]] == ["a", "av"]
    assert metrics["overall"]["n"] == 4
    assert [d["name"] for d in metrics["by_difficulty"]] == ["unknown"]
    assert [(c.condition, c.rows_in, c.scored, c.rejected) for c in result.counts] == [("av", 3, 2, 1), ("a", 3, 2, 1)]
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted((r["condition"], r["row_id"]) for r in rejects) == [("a", "gone"), ("av", "gone")]
    report = result.files.report.read_text(encoding="utf-8")
    assert "| av | 3 | 2 | 1 | 0 |" in report and "0 clips truncated" in report
