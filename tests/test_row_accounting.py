"""rows_in = rows_used + rows_rejected as the user sees it: the final figures (rows rejected while decoding
during an epoch included, counted across loader workers, each row once) printed after every epoch and at the
end of fit; with `check_media: true` they are final before training."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import lightning as L
import pytest
from helpers import BAD, traced_rows, write_manifest
from training_probes import BatchIds

from datamodules.cavsr import CavsrDataModule
from avcot.data.rows import BadRowError
from datamodules.mcq import McqDataModule


def _manifest(tmp_path: Path) -> Path:
    """10 lines: 6 good clips, 2 whose video only fails when decoded (truncated, readable headers), 1 that is
    not a video (refused up front), 1 that is not UTF-8 (refused up front)."""
    rows = traced_rows(6)
    shutil.copy(BAD / "truncated.mp4", tmp_path / "t.mp4")
    shutil.copy(BAD / "not_a_video.mp4", tmp_path / "x.mp4")
    rows += [dict(rows[0], id=f"trunc{i}", video="t.mp4", audio=None) for i in (1, 2)]
    rows.append(dict(rows[0], id="notvideo", video="x.mp4", audio=None))
    path = write_manifest(rows, tmp_path / "m.jsonl")
    with path.open("ab") as f:
        f.write('{"id": "latin1", "video": "t.mp4", "text": "caf\xe9"}\n'.encode("latin-1"))
    return path


def _dm(manifest: Path, tmp_path: Path, **kw) -> CavsrDataModule:
    return CavsrDataModule(train_manifest=str(manifest), val_fraction=0.0, batch_size=2, num_frames=2, frame_size=56,
                           max_seconds=2.0, rejects_path=str(tmp_path / "rejects.jsonl"), **kw)


def _printed(out: str) -> dict[str, tuple[int, int, int]]:
    found = re.findall(r"rows (after epoch \d|at the end of fit): \S*m\.jsonl: rows_in=(\d+) rows_used=(\d+) "
                       r"rows_rejected=(\d+) \(reasons in \S*rejects\.jsonl\)", out)
    return {when: tuple(map(int, n)) for when, *n in found}


@pytest.mark.parametrize("progress_bar", [False, True], ids=["plain", "progress-bar"])
def test_final_counts_are_printed_after_each_epoch_and_at_the_end(tmp_path, capsys, progress_bar):
    manifest = _manifest(tmp_path)
    dm = _dm(manifest, tmp_path, num_workers=1)  # rejects found in a worker process
    dm.setup("fit")
    source = str(manifest.resolve())
    assert dm.counts[source].rows_used == 8  # before decoding: the two truncated clips still count as used
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=progress_bar, enable_model_summary=False, limit_val_batches=0)
    module = BatchIds()
    trainer.fit(module, dm)
    final = (10, 6, 4)
    assert _printed(capsys.readouterr().out) == {"after epoch 0": final, "after epoch 1": final,
                                                 "at the end of fit": final}
    assert {i for b in module.ids for i in b} == {r["id"] for r in traced_rows(6)}
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert sorted((r["row_id"], r["stage"]) for r in rejects) == [  # each once, though decoded every epoch
        ("line 10", "manifest"), ("notvideo", "media"), ("trunc1", "decode"), ("trunc2", "decode")]
    assert trainer.callback_metrics["data/rows_rejected"] == 4


def test_check_media_makes_the_counts_final_before_training(tmp_path):
    manifest = _manifest(tmp_path)
    dm = _dm(manifest, tmp_path, check_media=True, num_workers=1)
    dm.setup("fit")
    counts = dm.counts[str(manifest.resolve())]
    assert (counts.rows_in, counts.rows_used, counts.rows_rejected) == (10, 6, 4)
    assert [r["id"] for r in dm.datasets["train"].rows] == [r["id"] for r in traced_rows(6)]
    assert [c.id for c in dm.records["train"]] == [r["id"] for r in traced_rows(6)]
    decode = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()][-2:]
    assert [(r["row_id"], r["stage"]) for r in decode] == [("trunc1", "decode"), ("trunc2", "decode")]
    assert all("t.mp4" in r["reason"] for r in decode)
    strict = _dm(manifest.with_name("ok.jsonl"), tmp_path, check_media=True, on_bad_row="error")
    write_manifest(traced_rows(2) + [dict(traced_rows(1)[0], id="trunc", video=str(tmp_path / "t.mp4"), audio=None)],
                   manifest.with_name("ok.jsonl"))
    with pytest.raises(BadRowError, match=r"ok\.jsonl: row trunc: decode: line 3: .*t\.mp4"):
        strict.setup("fit")


def test_mcq_check_media_and_decode_rejects(tmp_path, data_dir):
    src = data_dir / "synth" / "mcq.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()][:3]
    for r in rows:
        for k in ("video", "audio"):
            r[k] = str(src.parent / r[k]) if r[k] else None
    shutil.copy(BAD / "truncated.mp4", tmp_path / "t.mp4")
    rows.append(dict(rows[0], id="trunc", video=str(tmp_path / "t.mp4")))
    manifest = write_manifest(rows, tmp_path / "mcq.jsonl")
    for check in (False, True):
        dm = McqDataModule(train_manifest=str(manifest), target="none", batch_size=4, num_frames=2, frame_size=56,
                           max_seconds=2.0, check_media=check, rejects_path=str(tmp_path / f"r{check}.jsonl"))
        dm.setup("fit")
        if not check:
            (batch,) = list(dm.train_dataloader())
            assert sorted(batch.ids) == sorted(r["id"] for r in rows[:3])
        counts = dm.counts[str(manifest.resolve())]
        assert (counts.rows_in, counts.rows_used, counts.rows_rejected) == (4, 3, 1), check
