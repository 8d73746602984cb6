"""The data pipeline and training resolve a manifest's media paths the same way (`avcot.manifest.resolve_media`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from avcot.manifest import resolve_media
from avcot.pipeline.rows import avrt_row, cavsr_row


@pytest.mark.parametrize("written", ["~/clips/a.wav", "clips/a.wav", "./clips/../clips/a.wav"])
def test_pipeline_rows_point_at_the_file_training_reads(tmp_path, monkeypatch, written):
    home, data = tmp_path / "home", tmp_path / "data"
    monkeypatch.setenv("HOME", str(home))
    for root in (home, data):
        (root / "clips").mkdir(parents=True)
        (root / "clips" / "a.wav").write_bytes(b"RIFF")
    source = data / "in.jsonl"
    training = Path(resolve_media(written, data)).resolve()
    assert training.is_file()
    row = cavsr_row({"id": "r1", "text": "好", "audio": written}, 0, source)
    assert row.audio == str(training) and row.video is None
    item = avrt_row({"id": "q1", "question": "?", "options": ["x", "y"], "answer": "A", "audio": written}, 0, source)
    assert item.audio == str(training)


def test_a_missing_media_file_names_the_field_and_the_resolved_path(tmp_path):
    with pytest.raises(ValueError, match=r"audio file not found: .*/data/nowhere\.wav"):
        cavsr_row({"id": "r1", "text": "好", "audio": "nowhere.wav"}, 0, tmp_path / "data" / "in.jsonl")
