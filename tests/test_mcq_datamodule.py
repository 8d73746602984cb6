"""McqDataModule on the committed synthetic MCQ fixtures: modality dropping, targets, bad rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from avcot.data.rows import BadRowError

TRACE = "<think>\n看到标志\n</think>\n<answer>{}</answer>"


def _rows(data_dir: Path, suffix: str, n: int = 2) -> list[dict]:
    """Fixture rows of one kind (-av: video with its soundtrack, -a: wav only), media paths made absolute."""
    src = data_dir / "synth" / "mcq.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    picked = [r for r in rows if r["id"].endswith(suffix)][:n]
    for r in picked:
        for k in ("video", "audio"):
            if r[k]:
                r[k] = str(src.parent / r[k])
    return picked


def _write(tmp_path: Path, rows: list[dict], name: str = "m.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def _batch(manifest: str, **kw) -> dict:
    from datamodules.mcq import McqDataModule

    dm = McqDataModule(train_manifest=manifest, batch_size=2, num_frames=2, frame_size=56, max_seconds=2.0,
                       on_bad_row="error", **kw)
    dm.setup("fit")
    return next(iter(dm.train_dataloader())), dm


def _count(batch, dm, token: str) -> int:
    return int((batch.inputs["input_ids"] == dm.processor.tokenizer.convert_tokens_to_ids(token)).sum())


@pytest.mark.parametrize("modality,video,audio", [("av", True, True), ("a", False, True), ("v", True, False)])
def test_modality_dropping_removes_the_other_stream(tmp_path, data_dir, modality, video, audio):
    manifest = _write(tmp_path, _rows(data_dir, "-av"))
    batch, dm = _batch(manifest, target="none", modality=modality)
    assert ("pixel_values_videos" in batch.inputs) == video
    assert ("input_features" in batch.inputs) == audio
    assert (_count(batch, dm, "<|VIDEO|>") > 0) == video
    assert (_count(batch, dm, "<|AUDIO|>") > 0) == audio
    assert batch.inputs["attention_mask"][:, -1].all()  # prompt-only batches are left-padded for generation
    assert batch.answers == batch.references == tuple(r["answer"] for r in _rows(data_dir, "-av"))


def test_audio_only_rows_have_no_video_even_in_av_mode(tmp_path, data_dir):
    batch, dm = _batch(_write(tmp_path, _rows(data_dir, "-a")), target="none")
    assert "pixel_values_videos" not in batch.inputs and "input_features" in batch.inputs


def test_trace_target_labels_only_the_trace(tmp_path, data_dir):
    rows = _rows(data_dir, "-av")
    for r in rows:
        r["trace"] = TRACE.format(r["answer"])
    batch, dm = _batch(_write(tmp_path, rows), target="trace")
    tok = dm.processor.tokenizer
    for i, r in enumerate(rows):
        labels = batch.inputs["labels"][i]
        labelled = labels[labels != -100]
        assert tok.decode(labelled[:-1]) == TRACE.format(r["answer"])  # + the final <|im_end|>
    assert batch.inputs["attention_mask"][:, 0].all()  # SFT batches are right-padded


def test_rows_without_trace_are_rejected_for_sft(tmp_path, data_dir):
    from datamodules.mcq import McqDataModule

    rows = _rows(data_dir, "-av")
    rows[0]["trace"] = TRACE.format(rows[0]["answer"])
    rejects = tmp_path / "rejects.jsonl"
    dm = McqDataModule(train_manifest=_write(tmp_path, rows), target="trace", rejects_path=str(rejects))
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 1
    lines = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [x["row_id"] for x in lines] == [rows[1]["id"]] and "no merged trace" in lines[0]["reason"]


def test_bad_answer_letter_names_file_and_row(tmp_path, data_dir):
    rows = _rows(data_dir, "-av")
    rows[1]["answer"] = "E"
    manifest = _write(tmp_path, rows)
    expected = rf"m\.jsonl: row {rows[1]['id']}: manifest: line 2: field 'answer' must be one of"
    with pytest.raises(BadRowError, match=expected):
        _batch(manifest, target="none")


def test_drop_streams_keeps_video_soundtrack_for_audio_only():
    from avcot.records import McqItem
    from avcot.data.mcq import drop_streams

    item = McqItem("x", "q?", ("a", "b"), "A", video="/v.mp4")
    assert drop_streams(item, "a").video is None and drop_streams(item, "a").audio == "/v.mp4"
    assert drop_streams(item, "v").audio is None and drop_streams(item, "v").video == "/v.mp4"
    with pytest.raises(ValueError, match="modality"):
        drop_streams(item, "x")
