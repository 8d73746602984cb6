"""avcot.manifest: line-by-line reading (a bad line is that line's error, with its real number) and the one
field schema that training (DataModules) and the data pipeline both apply."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from avcot.manifest import FieldError, ManifestLine, cavsr_fields, manifest_records, mcq_fields, read_manifest
from avcot.pipeline.rows import load_rows, read_records
from datamodules.cavsr import CavsrDataModule

SYNTH = Path(__file__).parent / "data" / "synth"


def _synth_rows(n: int) -> list[dict]:
    rows = manifest_records(SYNTH / "manifest.jsonl")[:n]
    return [dict(r, video=str(SYNTH / r["video"]), audio=str(SYNTH / r["audio"])) for r in rows]


def _mixed(tmp_path: Path) -> Path:
    """line 1 ok, 2 blank, 3 Latin-1, 4 not JSON, 5 a JSON list, 6 ok (CRLF line ends throughout)."""
    lines = [b'{"id": "a", "text": "x"}', b"", '{"id": "b", "text": "caf\xe9"}'.encode("latin-1"),
             b'{"id": "c", "text": ', b"[1, 2]", '{"id": "d", "text": "实验"}'.encode("utf-8")]
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return path


def test_jsonl_is_read_line_by_line_with_real_line_numbers(tmp_path):
    got = read_manifest(_mixed(tmp_path))
    assert [e.line for e in got] == [1, 3, 4, 5, 6]
    assert got[0] == ManifestLine(1, record={"id": "a", "text": "x"})
    assert got[4] == ManifestLine(6, record={"id": "d", "text": "实验"})
    assert got[1].record is None and got[1].error.startswith("not valid UTF-8")
    assert got[2].error.startswith("not valid JSON") and got[3].error == "expected a JSON object, got list"


def test_pipeline_read_records_gives_the_same_lines_instead_of_a_decode_error(tmp_path):
    path = _mixed(tmp_path)
    expected = [(e.line, e.record if e.error is None else e.error) for e in read_manifest(path)]
    assert read_records(path) == expected


def test_json_array_json_lines_and_parquet_read_alike(tmp_path):
    import polars as pl

    rows = [{"id": "a", "text": "一"}, {"id": "b", "text": "二"}]
    (tmp_path / "arr.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    pl.DataFrame(rows).write_parquet(tmp_path / "m.parquet")
    want = [ManifestLine(1, record=rows[0]), ManifestLine(2, record=rows[1])]
    for name in ("arr.json", "lines.json", "m.parquet"):
        assert read_manifest(tmp_path / name) == want, name
    (tmp_path / "bad.json").write_text('[{"id": "a"}, 3]', encoding="utf-8")
    assert read_manifest(tmp_path / "bad.json")[1] == ManifestLine(2, error="expected a JSON object, got int")
    with pytest.raises(ValueError, match=r"m\.csv.*unsupported suffix"):
        (tmp_path / "m.csv").write_text("id\n")
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(ValueError, match=r"m\.jsonl:3: not valid UTF-8"):
        manifest_records(_mixed(tmp_path))


@pytest.mark.parametrize("record,reason", [
    ({"id": "a", "video": "v.mp4", "text": 123}, "field 'text' must be a string, got int"),
    ({"id": "a", "video": "v.mp4", "text": "  "}, "field 'text' is empty"),
    ({"id": "a", "video": "v.mp4"}, "field 'text' is missing"),
    ({"id": True, "video": "v.mp4", "text": "x"}, "field 'id' must be a non-empty string or an integer, got bool"),
    ({"id": "a", "video": "v.mp4", "text": "x", "pinyin": 5}, "field 'pinyin' must be a string, got int"),
    ({"id": "a", "video": 7, "text": "x"}, "field 'video' must be a string, got int"),
    ({"id": "a", "text": "x"}, "needs a video and/or an audio path"),
])
def test_cavsr_schema_reasons(record, reason):
    with pytest.raises(FieldError) as err:
        cavsr_fields(record)
    assert str(err.value) == reason


def test_mcq_schema():
    ok = {"id": 7, "question": "哪个？", "options": ["甲", "乙"], "answer": " b "}
    f = mcq_fields(ok)
    assert (f.id, f.answer, f.options, f.modality, f.trace) == ("7", "B", ("甲", "乙"), "av", None)
    for bad, reason in ((dict(ok, options=["甲", ""]), "every option must be a non-empty string"),
                        (dict(ok, answer="C"), "field 'answer' must be one of ('A', 'B')"),
                        (dict(ok, question=["q"]), "field 'question' must be a string, got list")):
        with pytest.raises(FieldError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            mcq_fields(bad)


def test_fit_and_the_pipeline_reject_a_numeric_text_with_the_same_reason(tmp_path):
    rows = _synth_rows(3)
    rows[1]["text"] = 123
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    reason = "field 'text' must be a string, got int"

    kept, pipeline_rejects, rows_in = load_rows(manifest, "cavsr")
    assert rows_in == 3 and [r.id for r in kept] == [rows[0]["id"], rows[2]["id"]]
    (pr,) = pipeline_rejects
    assert pr.row_id == rows[1]["id"] and pr.reason == f"m.jsonl:2: {reason}"

    dm = CavsrDataModule(train_manifest=str(manifest), target="transcript", val_fraction=0.0,
                         rejects_path=str(tmp_path / "rejects.jsonl"))
    dm.setup("fit")
    assert [r["id"] for r in dm.datasets["train"].rows] == [r.id for r in kept]
    (fr,) = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert fr["row_id"] == rows[1]["id"] and fr["reason"] == f"line 2: {reason}"


def test_pipeline_load_rows_rejects_a_non_utf8_line_and_keeps_the_rest(tmp_path):
    rows = _synth_rows(2)
    good = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in rows]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([good[0], '{"id": "x", "text": "caf\xe9"}'.encode("latin-1"), good[1]]) + b"\n")
    kept, rejects, rows_in = load_rows(path, "cavsr")
    assert rows_in == 3 and [r.id for r in kept] == [rows[0]["id"], rows[1]["id"]]
    (r,) = rejects
    assert r.row_id == "in.jsonl:2" and r.reason.startswith("in.jsonl:2: not valid UTF-8")
