"""Benchmark loaders on tiny hand-written samples in each benchmark's released format."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from avcot.eval.loaders import convert, load_avqa, load_chinese_lips, load_daily_omni, load_mmar, load_omnibench
from avcot.records import Clip, McqItem

BENCH = Path(__file__).parent / "data" / "benchmarks"


def test_chinese_lips_csv_to_clips_with_slide_video_and_reject_for_empty_text():
    loaded = load_chinese_lips(BENCH / "chinese_lips" / "meta_test.csv")
    assert [c.id for c in loaded.records] == ["ID1_25_F_KJ_001", "ID2_31_M_LY_001"]
    first = loaded.records[0]
    assert isinstance(first, Clip)
    assert first.text == "今天我们来讲一下期中考试的安排"
    root = (BENCH / "chinese_lips").resolve()
    assert first.video == str(root / "ID1_25_F_KJ" / "PPT" / "ID1_25_F_KJ_001_PPT.mp4")
    assert first.audio == str(root / "ID1_25_F_KJ" / "WAV" / "ID1_25_F_KJ_001.wav")
    assert len(loaded.rejects) == 1
    reject = loaded.rejects[0]
    assert reject.row_id == "ID1_25_F_KJ_002" and "TEXT" in reject.reason and reject.source.endswith("meta_test.csv")


def test_chinese_lips_face_view_and_custom_root(tmp_path):
    loaded = load_chinese_lips(BENCH / "chinese_lips" / "meta_test.csv", root=tmp_path, view="face")
    assert loaded.records[1].video == str(tmp_path.resolve() / "ID2_31_M_LY" / "FACE" / "ID2_31_M_LY_001_FACE.mp4")


def test_chinese_lips_rejects_a_csv_without_the_columns(tmp_path):
    bad = tmp_path / "meta.csv"
    bad.write_text("id,text\n1,你好\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing columns"):
        load_chinese_lips(bad)


def test_omnibench_answer_text_becomes_letter_and_media_under_mm_data():
    loaded = load_omnibench(BENCH / "omnibench" / "batch-5_tiny.jsonl")
    assert [m.id for m in loaded.records] == ["omnibench-0", "omnibench-2"]
    item = loaded.records[0]
    assert isinstance(item, McqItem)
    assert item.answer == "B" and item.options[1] == "Fixing a bike"
    assert item.audio == str(BENCH.resolve() / "mm_data" / "audio" / "0.mp3")
    assert item.image == str(BENCH.resolve() / "mm_data" / "image" / "0.jpg")
    assert loaded.records[1].answer == "C"
    assert [r.row_id for r in loaded.rejects] == ["1"] and "Five" in loaded.rejects[0].reason


def test_omnibench_reads_json_lines_too(tmp_path):
    rows = json.loads((BENCH / "omnibench" / "batch-5_tiny.jsonl").read_text(encoding="utf-8"))
    lines = tmp_path / "dataset" / "x.jsonl"
    lines.parent.mkdir()
    lines.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    loaded = load_omnibench(lines)
    assert [m.answer for m in loaded.records] == ["B", "C"]
    assert loaded.records[0].audio == str(tmp_path.resolve() / "mm_data" / "audio" / "0.mp3")


def test_daily_omni_strips_letter_prefixes_and_builds_video_path():
    loaded = load_daily_omni(BENCH / "daily_omni" / "qa.json")
    assert len(loaded.records) == 2
    first = loaded.records[0]
    assert first.options == ("A bell", "A dog barking", "Applause", "Silence")
    assert first.answer == "A"
    assert first.video == str((BENCH / "daily_omni" / "Videos" / "bswbQtOPk6E" / "bswbQtOPk6E_video.mp4").resolve())
    assert first.audio is None and first.modality == "av"
    assert loaded.records[1].answer == "C"
    assert len(loaded.rejects) == 1 and "'E'" in loaded.rejects[0].reason


def test_avqa_index_answer_to_letter_and_out_of_range_rejected():
    loaded = load_avqa(BENCH / "avqa" / "val_qa.json")
    assert [m.id for m in loaded.records] == ["avqa-183", "avqa-184"]
    assert loaded.records[0].answer == "C" and loaded.records[0].options[2] == "horse"
    assert loaded.records[1].answer == "A"
    assert loaded.records[0].video == str((BENCH / "avqa" / "videos" / "-HG3Omg_89c_000030.mp4").resolve())
    assert [r.row_id for r in loaded.rejects] == ["185"] and "out of range" in loaded.rejects[0].reason


def test_mmar_relative_audio_two_options_and_case_insensitive_answer():
    loaded = load_mmar(BENCH / "mmar" / "MMAR-meta.json")
    first, second = loaded.records
    assert first.answer == "C" and first.modality == "a" and first.video is None
    assert first.audio == str((BENCH / "mmar" / "audio" / "KBn0lNwcPHA_00-00-00_00-00-30.wav").resolve())
    assert second.options == ("happy", "sad") and second.answer == "B"
    assert loaded.rejects == ()


def test_convert_writes_manifest_and_rejects(tmp_path):
    out = tmp_path / "avqa.jsonl"
    loaded = convert("avqa", BENCH / "avqa" / "val_qa.json", out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["answer"] for r in rows] == ["C", "A"]
    assert rows[0]["options"] == ["dog", "cat", "horse", "cow"]
    rejects = (tmp_path / "avqa.jsonl.rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rejects) == len(loaded.rejects) == 1
    with pytest.raises(ValueError, match="unknown benchmark"):
        convert("nope", BENCH / "avqa" / "val_qa.json", out)
