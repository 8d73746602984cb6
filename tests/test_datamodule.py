"""CAVSR DataModule: manifest validation, rejects, split, label masking, audio-in-video, ablations, predict."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import BAD, SYNTH, traced_rows, write_manifest, write_traced_manifest

from avcot.data.cavsr import CavsrTask
from avcot.data.clips import MediaSettings, load_clip
from avcot.data.examples import EpochSeededSampler, prepare_rows
from avcot.data.rows import BadRowError, RejectLog, split_rows
from avcot.manifest import read_manifest
from datamodules.cavsr import CavsrDataModule


def _dm(manifest: Path, tmp_path: Path, **kw) -> CavsrDataModule:
    kw.setdefault("rejects_path", str(tmp_path / "rejects.jsonl"))
    return CavsrDataModule(train_manifest=str(manifest), **kw)


def _rejects(tmp_path: Path) -> list[dict]:
    p = tmp_path / "rejects.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_labels_cover_exactly_the_trace_token_by_token(tmp_path, tiny_processor):
    rows = traced_rows(4)
    dm = _dm(write_manifest(rows, tmp_path / "m.jsonl"), tmp_path, val_fraction=0.0, batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    tok = tiny_processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    traces = {r["id"]: r["trace"] for r in rows}
    for i, rid in enumerate(batch.ids):
        ids, labels, mask = batch.inputs["input_ids"][i], batch.inputs["labels"][i], batch.inputs["attention_mask"][i]
        kept = (labels != -100).nonzero().flatten()
        # One contiguous block at the end of the real tokens: the assistant turn, then <|im_end|>.
        assert kept.tolist() == list(range(int(kept[0]), int(mask.sum())))
        for j in range(len(ids)):
            assert labels[j].item() in (-100, ids[j].item()), f"row {rid} token {j} labelled with another id"
        assert labels[kept[-1]].item() == eos
        assert tok.decode(labels[kept[:-1]]) == traces[rid]
        assert tok.decode(ids[: kept[0]]).endswith("<|im_start|>assistant\n")


def test_transcript_target_uses_plain_prompt_and_text(tmp_path, tiny_processor):
    from avcot.prompts import STUDENT_AVCOT_PROMPT, STUDENT_PLAIN_PROMPT

    rows = traced_rows(2)
    manifest = write_manifest(rows, tmp_path / "m.jsonl")
    tok = tiny_processor.tokenizer
    for target, instruction, expect in (("transcript", STUDENT_PLAIN_PROMPT, "text"),
                                        ("avcot", STUDENT_AVCOT_PROMPT, "trace")):
        dm = _dm(manifest, tmp_path, target=target, val_fraction=0.0, batch_size=1)
        dm.setup("fit")
        ex = dm.datasets["train"][0]
        prompt = tok.decode(ex.encoded.input_ids[: ex.encoded.prompt_len])
        assert instruction in prompt
        row = next(r for r in rows if r["id"] == ex.id)
        assert tok.decode(ex.encoded.input_ids[ex.encoded.prompt_len:-1]) == row[expect]


def test_relative_media_paths_resolve_against_manifest_dir(tmp_path):
    dm = _dm(SYNTH / "manifest.jsonl", tmp_path, target="transcript", val_fraction=0.0, batch_size=1)
    dm.setup("fit")
    assert dm.counts[str((SYNTH / "manifest.jsonl").resolve())].rows_used == 12
    ex = dm.datasets["train"][0]
    assert ex is not None and "pixel_values_videos" in ex.encoded.media


def test_audio_in_video_flag_changes_layout_and_reaches_the_model(tmp_path):
    from lit_modules.sft import SFTModule

    manifest = write_traced_manifest(tmp_path / "m.jsonl", 2)
    batches = {}
    for flag in (False, True):
        dm = _dm(manifest, tmp_path, use_audio_in_video=flag, val_fraction=0.0, batch_size=2)
        dm.setup("fit")
        batches[flag] = next(iter(dm.train_dataloader()))
        assert batches[flag].inputs["use_audio_in_video"] is flag
    off, on = batches[False].inputs["input_ids"], batches[True].inputs["input_ids"]
    assert off.shape != on.shape or not torch.equal(off, on)
    module = SFTModule()
    module.configure_model()
    seen = []
    inner = module.model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("use_audio_in_video"))
        return inner(*args, **kwargs)

    module.model.forward = spy
    with torch.no_grad():
        for flag in (False, True):
            module(batches[flag])
    assert seen == [False, True]


def test_split_is_seeded_and_keeps_sentences_apart():
    rows = [{"id": f"r{i}", "sentence_id": f"s{i // 2}"} for i in range(20)]
    train, val = split_rows(rows, 0.3, seed=7, group_column="sentence_id")
    assert {r["sentence_id"] for r in train}.isdisjoint({r["sentence_id"] for r in val})
    assert len(val) == 6 and len(train) == 14  # floor(10 groups * 0.3) = 3 groups of 2 rows
    assert split_rows(rows, 0.3, seed=7, group_column="sentence_id") == (train, val)
    assert split_rows(rows, 0.3, seed=8, group_column="sentence_id")[1] != val
    flat_train, flat_val = split_rows(rows, 0.25, seed=0)
    assert len(flat_val) == 5 and len(flat_train) == 15
    assert split_rows(rows[:2], 0.1, seed=0)[1] != []  # at least one val row whenever a fraction is asked


def test_datamodule_split_by_sentence_id(tmp_path):
    dm = _dm(write_traced_manifest(tmp_path / "m.jsonl"), tmp_path, val_fraction=0.34)
    dm.setup("fit")
    rows = {r["id"]: r for r in traced_rows()}
    train_s = {rows[r["id"]]["sentence_id"] for r in dm.datasets["train"].rows}
    val_s = {rows[r["id"]]["sentence_id"] for r in dm.datasets["val"].rows}
    assert val_s and train_s.isdisjoint(val_s)
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 12


def test_explicit_val_manifest(tmp_path):
    rows = traced_rows(6)
    train = write_manifest(rows[:4], tmp_path / "train.jsonl")
    val = write_manifest(rows[4:], tmp_path / "val.jsonl")
    dm = _dm(train, tmp_path, val_manifest=str(val))
    dm.setup("fit")
    assert [r["id"] for r in dm.datasets["val"].rows] == [r["id"] for r in rows[4:]]
    assert len(dm.datasets["train"]) == 4


def test_parquet_manifest_reads_like_jsonl(tmp_path):
    import polars as pl

    rows = traced_rows(3)
    pl.DataFrame(rows).write_parquet(tmp_path / "m.parquet")
    assert read_manifest(tmp_path / "m.parquet") == read_manifest(write_manifest(rows, tmp_path / "m.jsonl"))


def _bad_manifest(tmp_path: Path) -> tuple[Path, list[dict]]:
    rows = traced_rows(4)
    shutil.copy(BAD / "not_a_video.mp4", tmp_path / "corrupt.mp4")
    rows.append(dict(rows[0], id="corrupt", video="corrupt.mp4", audio=None))  # relative to the manifest dir
    rows.append(dict(rows[0], id="missing", video=str(tmp_path / "nope.mp4"), audio=None))
    rows.append(dict(rows[1]))  # duplicate id
    rows.append(dict(rows[0], id="empty-text", text="  "))
    rows.append(dict(rows[0], id="no-trace", trace=None))
    return write_manifest(rows, tmp_path / "bad.jsonl"), rows


def test_skip_mode_writes_rejects_and_counts_add_up(tmp_path):
    manifest, rows = _bad_manifest(tmp_path)
    dm = _dm(manifest, tmp_path, val_fraction=0.0)
    dm.setup("fit")
    counts = dm.counts[str(manifest.resolve())]
    assert (counts.rows_in, counts.rows_used, counts.rows_rejected) == (9, 4, 5)
    rejects = _rejects(tmp_path)
    by_id = {r["row_id"]: r for r in rejects}
    assert set(by_id) == {"corrupt", "missing", rows[1]["id"], "empty-text", "no-trace"}
    assert all(r["source"] == str(manifest.resolve()) for r in rejects)
    assert by_id["corrupt"]["stage"] == "media" and "corrupt.mp4" in by_id["corrupt"]["reason"]
    assert "nope.mp4" in by_id["missing"]["reason"]
    assert "duplicate" in by_id[rows[1]["id"]]["reason"]
    assert "empty" in by_id["empty-text"]["reason"]
    assert by_id["no-trace"]["stage"] == "target"
    assert len(dm.datasets["train"]) == 4


@pytest.mark.parametrize("bad_id,needle", [("corrupt", "corrupt.mp4"), ("missing", "nope.mp4"),
                                           ("empty-text", "'text' is empty"), ("no-trace", "no trace")])
def test_error_mode_names_manifest_row_and_file(tmp_path, bad_id, needle):
    manifest, rows = _bad_manifest(tmp_path)
    keep = [r for r in rows[:4] if r["id"] != bad_id] + [r for r in rows if r["id"] == bad_id]
    write_manifest(keep, manifest)
    dm = _dm(manifest, tmp_path, on_bad_row="error")
    with pytest.raises(BadRowError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert str(manifest.resolve()) in msg and f"row {bad_id}" in msg and needle in msg


def test_missing_columns_is_always_an_error(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "text"} for r in traced_rows(2)]
    with pytest.raises(ValueError, match=r"lacks required column\(s\) \['text'\]"):
        prepare_rows(write_manifest(rows, tmp_path / "m.jsonl"), CavsrTask(), with_target=True, policy="skip",
                     rejects=None)


def test_decode_failure_at_getitem_is_rejected_once_or_raised(tmp_path):
    rows = traced_rows(2)
    shutil.copy(BAD / "truncated.mp4", tmp_path / "t.mp4")  # readable headers: only decoding finds it
    rows.append(dict(rows[0], id="truncated", video=str(tmp_path / "t.mp4"), audio=None))
    manifest = write_manifest(rows, tmp_path / "m.jsonl")
    dm = _dm(manifest, tmp_path, val_fraction=0.0, batch_size=3)
    dm.setup("fit")
    ds = dm.datasets["train"]
    idx = [r["id"] for r in ds.rows].index("truncated")
    skipped = ds[idx]
    assert skipped.line == 3 and skipped.reject.row_id == "truncated" and "t.mp4" in skipped.reject.reason
    assert dm.counts[str(manifest.resolve())].rows_rejected == 0  # not known before it is decoded
    for epoch in range(2):  # decoded every epoch, recorded once
        dm.train_dataloader().sampler.set_epoch(epoch)
        batch = next(iter(dm.train_dataloader()))
        assert sorted(batch.ids) == sorted(r["id"] for r in rows[:2])
    assert [(r["row_id"], r["stage"]) for r in _rejects(tmp_path)] == [("truncated", "decode")]
    assert "line 3" in _rejects(tmp_path)[0]["reason"]
    counts = dm.counts[str(manifest.resolve())]
    assert (counts.rows_in, counts.rows_used, counts.rows_rejected) == (3, 2, 1)
    strict = _dm(manifest, tmp_path, val_fraction=0.0, on_bad_row="error")
    strict.setup("fit")
    with pytest.raises(BadRowError, match="row truncated.*line 3.*t.mp4"):
        strict.datasets["train"][idx]


def load_av(video, audio, settings, other_video=None):
    clip = load_clip(video, audio, settings, other_video=other_video)
    return clip.frames, clip.audio, clip.fps


def test_video_ablations(tmp_path):
    rows = traced_rows(2)
    a, b = rows[0], rows[1]
    real, wav, fps = load_av(a["video"], a["audio"], MediaSettings(num_frames=4))
    assert real.shape == (4, 112, 112, 3) and real.std() > 0 and wav.dtype == np.float32
    assert fps == pytest.approx(4 / a["duration_s"], rel=0.05)
    black, _, _ = load_av(a["video"], a["audio"], MediaSettings(video="black"))
    assert black.shape == real.shape and not black.any()
    other, _, _ = load_av(b["video"], b["audio"], MediaSettings())
    swapped, _, fps_r = load_av(a["video"], a["audio"], MediaSettings(video="random"), other_video=b["video"])
    assert np.array_equal(swapped, other) and fps_r == fps
    none, wav_n, _ = load_av(a["video"], a["audio"], MediaSettings(video="none"))
    assert none is None and np.array_equal(wav_n, wav)


def test_video_none_is_audio_only_in_the_batch(tmp_path, tiny_processor):
    dm = _dm(write_traced_manifest(tmp_path / "m.jsonl", 2), tmp_path, video="none", val_fraction=0.0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "pixel_values_videos" not in batch.inputs and "input_features" in batch.inputs
    assert not (batch.inputs["input_ids"] == tiny_processor.tokenizer.video_token_id).any()


def test_predict_loader_is_left_padded_without_targets(tmp_path):
    rows = traced_rows(3)
    rows[1] = dict(rows[1], trace=None)  # predict needs no trace
    dm = CavsrDataModule(predict_manifest=str(write_manifest(rows, tmp_path / "m.jsonl")), eval_batch_size=3,
                         rejects_path=str(tmp_path / "rejects.jsonl"))
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch.ids == tuple(r["id"] for r in rows) and batch.answers is None
    assert batch.references == tuple(r["text"] for r in rows)
    assert (batch.inputs["labels"] == -100).all()
    assert batch.inputs["attention_mask"][:, -1].all()  # every row ends at the last column: left padding
    assert not batch.inputs["attention_mask"][:, 0].all()  # prompts differ in length, so some row is padded


def test_epoch_seeded_sampler_depends_only_on_seed_and_epoch():
    s = EpochSeededSampler(10, seed=3)
    s.set_epoch(1)
    first = list(s)
    torch.manual_seed(123)  # the global RNG must not matter
    t = EpochSeededSampler(10, seed=3)
    t.set_epoch(1)
    assert list(t) == first and sorted(first) == list(range(10))
    t.set_epoch(2)
    assert list(t) != first
    assert list(EpochSeededSampler(4, shuffle=False)) == [0, 1, 2, 3]


def test_reject_log_appends_jsonl(tmp_path):
    from avcot.records import Reject

    log = RejectLog(tmp_path / "sub" / "r.jsonl")
    log.add(Reject("a", "media", "bad file", "m.jsonl"))
    log.add(Reject("b", "manifest", "duplicate id 'a'", "m.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "sub" / "r.jsonl").read_text().splitlines()]
    assert lines == [{"row_id": "a", "stage": "media", "reason": "bad file", "source": "m.jsonl"},
                     {"row_id": "b", "stage": "manifest", "reason": "duplicate id 'a'", "source": "m.jsonl"}]
    assert log.count == 2


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="even"):
        MediaSettings(num_frames=3)
    with pytest.raises(ValueError, match="multiple of 28"):
        MediaSettings(frame_size=100)
    with pytest.raises(ValueError, match="target"):
        CavsrDataModule(target="trace")


def test_a_manifest_with_every_row_rejected_is_an_error_not_zero_steps(tmp_path):
    """Skip mode still refuses to train on nothing: the error names the manifest and the rejects file."""
    import json

    manifest = tmp_path / "m.jsonl"
    rows = [{"id": f"r{i}", "video": f"missing{i}.mp4", "audio": None, "text": "实验"} for i in range(3)]
    manifest.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    rejects = tmp_path / "rejects.jsonl"
    dm = CavsrDataModule(train_manifest=str(manifest), target="transcript", on_bad_row="skip",
                         rejects_path=str(rejects))
    with pytest.raises(BadRowError, match=r"m\.jsonl: no usable rows: all 3 rows were rejected.*rejects\.jsonl"):
        dm.setup("fit")
    assert len(rejects.read_text().splitlines()) == 3


def _with_bad_lines(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Four good rows, then a Latin-1 line (line 5), a blank line, a line that is not JSON (line 7)."""
    rows = traced_rows(4)
    good = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    latin1 = '{"id": "latin1", "video": "a.mp4", "text": "caf\xe9"}'.encode("latin-1")
    path = tmp_path / "m.jsonl"
    path.write_bytes(good + latin1 + b"\n\n" + b'{"id": "cut", "text"\n')
    return path, rows


def test_a_non_utf8_line_is_a_reject_naming_its_line_and_the_rest_trains(tmp_path):
    manifest, rows = _with_bad_lines(tmp_path)
    dm = _dm(manifest, tmp_path, val_fraction=0.0)
    dm.setup("fit")
    assert [r["id"] for r in dm.datasets["train"].rows] == [r["id"] for r in rows]
    by_line = {r["reason"].split(":")[0]: r for r in _rejects(tmp_path)}
    assert set(by_line) == {"line 5", "line 7"}
    assert "UTF-8" in by_line["line 5"]["reason"] and by_line["line 5"]["row_id"] == "line 5"
    assert "not valid JSON" in by_line["line 7"]["reason"]
    counts = dm.counts[str(manifest.resolve())]
    assert (counts.rows_in, counts.rows_used, counts.rows_rejected) == (6, 4, 2)  # the blank line is no row
    with pytest.raises(BadRowError, match=r"m\.jsonl: row line 5: manifest: line 5: not valid UTF-8"):
        _dm(manifest, tmp_path, on_bad_row="error").setup("fit")


def test_a_non_string_text_is_rejected_not_trained_on_as_a_string(tmp_path):
    rows = traced_rows(3)
    rows[1] = dict(rows[1], text=123)
    manifest = write_manifest(rows, tmp_path / "m.jsonl")
    dm = _dm(manifest, tmp_path, val_fraction=0.0, target="transcript")
    dm.setup("fit")
    assert rows[1]["id"] not in [r["id"] for r in dm.datasets["train"].rows]
    (reject,) = _rejects(tmp_path)
    assert reject["row_id"] == rows[1]["id"] and reject["reason"] == "line 2: field 'text' must be a string, got int"
