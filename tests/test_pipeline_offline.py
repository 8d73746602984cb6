"""End-to-end offline pipeline runs on the committed synthetic clips (real rapidocr, rule backends)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from helpers import BAD, FAST_PIPELINE, SYNTH, read_jsonl, synth_rows, write_jsonl

from avcot.pipeline import load_config, run_avrt, run_cavsr
from avcot.pipeline.config import PipelineConfig, config_from_dict
from avcot.records import Clip, McqItem
from avcot.traces import parse_answer, parse_avcot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cavsr_run(tmp_path_factory):
    """One offline CAVSR run over the 12 synthetic clips plus corrupt and malformed rows."""
    tmp = tmp_path_factory.mktemp("cavsr")
    good = synth_rows()
    wav = good[0]["audio"]
    bad = [
        {"id": "bad-notvideo", "video": str(BAD / "not_a_video.mp4"), "audio": wav, "text": "这次实验的结果很重要",
         "target": "实验", "competitor": "试验"},
        {"id": "bad-truncated", "video": str(BAD / "truncated.mp4"), "audio": wav, "text": "这次实验的结果很重要",
         "target": "实验", "competitor": "试验"},
        {"id": "bad-noaudio", "video": str(BAD / "video_only.mp4"), "audio": None, "text": "这次实验的结果很重要"},
        {"id": "bad-missing", "video": str(tmp / "nope.mp4"), "audio": wav, "text": "x"},
        {"id": "bad-notext", "video": good[0]["video"], "audio": wav},
        "{not json",
        {**good[1], "id": good[1]["id"]},  # duplicate id of a good row
    ]
    manifest = write_jsonl(tmp / "in.jsonl", [*good, *bad])
    config = config_from_dict(FAST_PIPELINE)
    t0 = time.monotonic()
    counts = run_cavsr(manifest, tmp / "out", config)
    return tmp / "out", counts, good, time.monotonic() - t0, config, manifest


def test_cavsr_exports_every_good_clip_with_a_valid_trace(cavsr_run):
    out, counts, good, _, _, _ = cavsr_run
    clips = [Clip(**r) for r in read_jsonl(out / "sft.jsonl")]
    assert [c.id for c in clips] == [r["id"] for r in good]  # input order, nothing lost
    assert pl.read_parquet(out / "sft.parquet").to_dicts() == read_jsonl(out / "sft.jsonl")
    by_id = {r["id"]: r for r in good}
    for clip in clips:
        ref = by_id[clip.id]
        trace = parse_avcot(clip.trace)
        assert trace is not None and trace.transcription == ref["text"]
        assert trace.acoustic_pinyin == ref["pinyin"]
        assert ref["target"] in trace.reasoning and ref["competitor"] in trace.reasoning
        assert (out / clip.video).resolve() == Path(ref["video"]).resolve()  # relative to the export
        cues = trace.visual_cues
        if ref["cue"] == "background":  # real OCR read the sign (a sign repeating the speech may be
            assert ref["screen_text"] in cues  # called a subtitle by filters.classify_ocr's heuristic)
        if ref["cue"] in ("subtitle", "conflict"):
            assert ref["screen_text"] in cues.split("Subtitles:")[1].split("\n")[0]
        if ref["cue"] == "conflict":
            assert "conflicts with the speech" in trace.reasoning


def test_cavsr_rejects_bad_rows_and_counts_add_up(cavsr_run):
    out, counts, good, _, _, _ = cavsr_run
    rejects = {r["row_id"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert pl.read_parquet(out / "rejects.parquet").height == len(rejects)
    assert rejects["bad-notvideo"]["stage"] == "ocr" and "MediaError" in rejects["bad-notvideo"]["reason"]
    assert rejects["bad-notvideo"]["source"].endswith("not_a_video.mp4")
    # one OCR frame decodes; the caption's second frame is past the truncation point
    assert rejects["bad-truncated"]["stage"] == "caption" and "truncated" in rejects["bad-truncated"]["reason"]
    assert rejects["bad-noaudio"]["stage"] == "asr_a" and "audio" in rejects["bad-noaudio"]["reason"]
    assert rejects["bad-missing"]["stage"] == "load" and "not found" in rejects["bad-missing"]["reason"]
    # a raw clip is valid input now; the offline *simulated* ASR cannot hear it and says what to change
    notext = rejects["bad-notext"]
    assert notext["stage"] == "asr_a" and "transcripts: <your manifest>" in notext["reason"]
    assert any("not valid JSON" in r["reason"] for r in rejects.values())
    assert rejects[good[1]["id"]]["reason"].endswith(f"duplicate id {good[1]['id']!r}")
    assert (counts.rows_in, counts.kept, counts.filtered, counts.rejected) == (19, 12, 0, 7)
    assert json.loads((out / "counts.json").read_text())["rows_in"] == 19


def test_cavsr_rerun_reuses_every_shard(cavsr_run):
    out, counts, _, first_s, config, manifest = cavsr_run
    before = {p: p.stat().st_mtime_ns for p in (out / "stages").rglob("shard-*.parquet")}
    export = (out / "sft.jsonl").read_bytes()
    t0 = time.monotonic()
    again = run_cavsr(manifest, out, config)
    assert again == counts
    after = {p: p.stat().st_mtime_ns for p in (out / "stages").rglob("shard-*.parquet")}
    assert after == before  # no stage wrote a new shard
    assert (out / "sft.jsonl").read_bytes() == export
    assert time.monotonic() - t0 < first_s / 2


def test_changed_stage_config_recomputes_that_stage(cavsr_run, tmp_path):
    out, _, good, _, config, manifest = cavsr_run
    strict = dataclasses.replace(config, cavsr=dataclasses.replace(config.cavsr, max_candidates=2))
    shards = lambda s: sorted((out / "stages" / s).glob("shard-*.parquet"))  # noqa: E731
    n_ocr, n_annot = len(shards("ocr")), len(shards("annotate"))
    try:
        run_cavsr(manifest, out, strict)
        assert len(shards("ocr")) == n_ocr  # OCR does not depend on max_candidates
        assert len(shards("annotate")) > n_annot
        trace = parse_avcot(read_jsonl(out / "sft.jsonl")[0]["trace"])
        assert "could be any of: 实验, 试验. Because" in trace.reasoning  # cut to two candidates
    finally:
        run_cavsr(manifest, out, config)  # restore the module fixture's export for other tests


def test_cer_filter_and_mismatch_are_filtered_not_rejected(tmp_path):
    row = synth_rows()[0]
    same = {**row, "id": "same", "target": "", "competitor": "", "text": "一二三"}  # no homophone to swap
    manifest = write_jsonl(tmp_path / "in.jsonl", [same])
    config = config_from_dict({**FAST_PIPELINE, "roles": {"asr_b": {"kind": "rule_asr", "mode": "reference"}}})
    counts = run_cavsr(manifest, tmp_path / "out", config)
    assert (counts.kept, counts.filtered, counts.rejected) == (0, 1, 0)
    (f,) = pl.read_parquet(tmp_path / "out" / "filtered.parquet").to_dicts()
    assert f["stage"] == "cer_filter" and "CER 0.000" in f["reason"]


def mcq_rows(n: int) -> list[dict]:
    """The first `n` rows of the synthetic MCQ manifest with absolute media paths."""
    rows = []
    for line in (SYNTH / "mcq.jsonl").read_text(encoding="utf-8").splitlines()[:n]:
        r = json.loads(line)
        for k in ("video", "audio"):
            r[k] = str(SYNTH / r[k]) if r[k] else None
        rows.append(r)
    return rows


@pytest.fixture(scope="module")
def avrt_run(tmp_path_factory):
    """One offline AVRT run: clips 0000 and 0001 (6 questions) plus ill-formed and malformed items."""
    tmp = tmp_path_factory.mktemp("avrt")
    rows = mcq_rows(6)
    bad = [
        {**rows[0], "id": "bad-same-options", "options": ["实验", "市场", " 实验"]},  # A and C are one answer
        {**rows[0], "id": "bad-answer", "answer": "E"},
        {**rows[0], "id": "bad-video", "video": str(BAD / "not_a_video.mp4")},
    ]
    manifest = write_jsonl(tmp / "mcq.jsonl", [*rows, *bad])
    config = config_from_dict({**FAST_PIPELINE, "roles": {"teacher_asr": {
        "kind": "rule_asr", "mode": "reference", "transcripts": str(SYNTH / "manifest.jsonl")}}})
    counts = run_avrt(manifest, tmp / "out", config)
    return tmp / "out", counts, rows


def test_avrt_keeps_both_correct_and_labels_difficulty(avrt_run):
    out, counts, rows = avrt_run
    diff = {r["id"]: r for r in read_jsonl(out / "difficulty.jsonl")}
    assert set(diff) == {r["id"] for r in rows}  # a label for every good row, kept or not
    for r in diff.values():
        right = (r["visual_answer"] == r["answer"]) + (r["audio_answer"] == r["answer"])
        assert r["difficulty"] == ("hard", "medium", "easy")[right]
        assert r["kept"] == (right == 2)
    # audio-only questions: no frames, so the visual teacher cannot answer -> medium, filtered
    assert diff["synth-s0-0000-a"]["visual_answer"] is None and diff["synth-s0-0000-a"]["difficulty"] == "medium"
    # the sign reads 实验室 and the speech says 实验: both teachers pick A (实验)
    assert diff["synth-s0-0000-v"] == {"id": "synth-s0-0000-v", "answer": "A", "visual_answer": "A",
                                       "audio_answer": "A", "difficulty": "easy", "kept": True}
    items = [McqItem(**{**r, "options": tuple(r["options"])}) for r in read_jsonl(out / "sft.jsonl")]
    assert [i.id for i in items] == [i for i, r in diff.items() if r["kept"]]
    assert counts.kept == len(items) and counts.filtered == len(rows) - len(items)
    for item in items:
        assert parse_answer(item.trace) == item.answer and item.trace.startswith("<think>")
        assert item.difficulty == "easy"


def test_avrt_rl_manifest_lists_every_well_formed_item(avrt_run):
    """RL data is every well-formed question with its answer, not only the both-teachers-correct SFT rows."""
    out, counts, rows = avrt_run
    rl = read_jsonl(out / "rl.jsonl")
    assert [r["id"] for r in rl] == [r["id"] for r in rows]  # input order, filtered ones included
    assert len(rl) > counts.kept  # more than the SFT export
    assert pl.read_parquet(out / "rl.parquet").to_dicts() == rl
    labels = {r["id"]: r["difficulty"] for r in read_jsonl(out / "difficulty.jsonl")}
    for got, want in zip(rl, rows):
        item = McqItem(**{**got, "options": tuple(got["options"])})
        assert (item.question, item.options, item.answer) == (want["question"], tuple(want["options"]), want["answer"])
        assert item.trace is None and item.difficulty == labels[item.id]
        for k in ("video", "audio"):
            assert (want[k] is None) == (got[k] is None)
            if got[k]:
                assert (out / got[k]).resolve() == Path(want[k]).resolve()  # relative to the export
    rejects = {r["row_id"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert rejects["bad-same-options"]["stage"] == "mcq_check"
    same = rejects["bad-same-options"]["reason"]
    assert "ill-formed MCQ" in same and "'实验'" in same
    assert rejects["bad-answer"]["stage"] == "load" and "'answer'" in rejects["bad-answer"]["reason"]
    assert rejects["bad-video"]["stage"] == "visual_teacher"  # well formed, but its media cannot be read
    assert counts.rejected == 3 and counts.rows_in == len(rows) + 3
    assert counts.exports == {"sft": counts.kept, "rl": len(rl)}
    assert json.loads((out / "counts.json").read_text())["exports"] == {"sft": counts.kept, "rl": len(rl)}
    assert f"rl_rows={len(rl)}" in counts.line()


def test_avrt_rl_manifest_is_what_grpo_reads(avrt_run):
    """configs/avrt_3b_grpo.yaml trains on the RL manifest: the MCQ DataModule takes every row of it."""
    import yaml

    from datamodules.mcq import McqDataModule

    out, _, rows = avrt_run
    cfg = yaml.safe_load((ROOT / "configs" / "avrt_3b_grpo.yaml").read_text(encoding="utf-8"))
    assert Path(cfg["data"]["init_args"]["train_manifest"]).name == "rl.parquet"
    dm = McqDataModule(train_manifest=str(out / "rl.parquet"), target="none", num_frames=2, frame_size=56,
                       on_bad_row="error", check_media=True)  # any unusable row would raise
    dm.setup("fit")
    assert [r.id for r in dm.records["train"]] == [r["id"] for r in rows]


def _cli(manifest: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "avcot.pipeline", "cavsr", "--input", str(manifest), "--out", str(out),
            "--config", str(config), "--shard-size", "2", "--concurrency", "1", "--no-progress"]


def test_killed_run_resumes_to_the_same_export(tmp_path):
    manifest = write_jsonl(tmp_path / "in.jsonl", synth_rows()[:6])
    config = tmp_path / "fast.yaml"
    config.write_text("cavsr:\n  ocr_frames: 1\n  caption_frames: 2\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(_cli(manifest, clean, config), check=True, env=env, capture_output=True, timeout=300)

    proc = subprocess.Popen(_cli(manifest, killed, config), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((killed / "stages" / "ocr").glob("shard-*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the first OCR shard"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stage: 1 of 3 OCR shards written
    proc.wait()
    assert not (killed / "sft.jsonl").exists()
    n_before = len(list((killed / "stages" / "ocr").glob("shard-*.parquet")))
    assert n_before < 3

    done = subprocess.run(_cli(manifest, killed, config), check=True, env=env, capture_output=True,
                          timeout=300, text=True)
    assert "rows_in=6 kept=6 filtered=0 rejected=0" in done.stdout
    for name in ("sft.jsonl", "annotations.jsonl", "rejects.jsonl", "counts.json"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    for stage in ("asr_a", "ocr", "annotate"):  # every row stored exactly once, none duplicated
        keys = pl.concat([pl.read_parquet(p) for p in (killed / "stages" / stage).glob("shard-*.parquet")])["key"]
        assert keys.len() == 6 and keys.n_unique() == 6, stage


def test_config_files_load_and_bad_keys_are_named(tmp_path):
    offline = load_config(ROOT / "configs" / "pipeline_offline.yaml")
    assert offline.role("ocr").kind == "rapidocr" and offline.role("asr_b").options["mode"] == "swap"
    openai = load_config(ROOT / "configs" / "pipeline_openai.yaml")
    assert openai.role("annotator").kind == "chat" and openai.chats["omni"].kind == "openai"
    assert openai.role("asr_a").kind == "openai_asr" and openai.role("ocr").kind == "chat"
    assert "api_key" not in openai.role_identity("annotator").replace("api_key_env", "")
    with pytest.raises(ValueError, match=r"config\.cavsr: unknown key\(s\) \['ocr_frame'\]"):
        config_from_dict({"cavsr": {"ocr_frame": 2}})
    with pytest.raises(ValueError, match="roles.judge: kind 'chat' needs chat"):
        config_from_dict({"roles": {"judge": {"kind": "chat", "chat": "nope"}}})
    with pytest.raises(ValueError, match="api_key_env"):
        config_from_dict({"chats": {"x": {"kind": "openai", "api_key": "sk-1"}}})
    assert PipelineConfig().role("judge").kind == "rule"
