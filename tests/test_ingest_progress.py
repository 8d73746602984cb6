"""`avcot.pipeline ingest` shows a per-file progress bar (each file is probed, maybe cut and transcribed)."""
from __future__ import annotations

import shutil

from helpers import SYNTH

from avcot.pipeline.ingest import ingest


def test_ingest_shows_a_progress_bar_unless_told_not_to(tmp_path, capsys):
    media = tmp_path / "media"
    media.mkdir()
    for k in range(2):
        shutil.copy(SYNTH / "clips" / f"synth-s0-000{k}.wav", media / f"clip{k}.wav")
    report = ingest(media, tmp_path / "a.jsonl")
    err = capsys.readouterr().err
    assert report.files == 2 and "ingest" in err and "2/2" in err
    ingest(media, tmp_path / "b.jsonl", progress=False)
    assert "ingest" not in capsys.readouterr().err
