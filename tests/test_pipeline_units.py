"""Unit tests of the pipeline pieces: shard store, row keys, rule backends, stage functions, local backends."""
from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from avcot.pipeline.backends import AsrHint, BackendError
from avcot.pipeline.cavsr import candidates, cer_filter_stage, judge_stage, validate_stage
from avcot.pipeline.config import CavsrSettings, PipelineConfig, RoleFactory
from avcot.pipeline.local import FasterWhisperAsr, TransformersChat
from avcot.pipeline.report import count
from avcot.pipeline.roles import TeacherReply
from avcot.pipeline.rows import CavsrRow
from avcot.pipeline.rules import (
    RuleAsr, RuleCaptioner, RuleJudge, TemplateMerger, colour_name, option_overlap, pick_option, swap_homophone,
)
from avcot.pipeline.runner import Dropped, Kept, Stage, apply_stage, run_stage, work_items
from avcot.pipeline.store import Outcome, StageStore, row_key
from avcot.records import McqItem, Reject


def _outcome(key: str, order: int = 0, status: str = "kept") -> Outcome:
    return Outcome(key=key, row_id=f"r{order}", order=order, status=status, reason="", source="in", payload="{}")


def test_store_writes_atomically_and_first_shard_wins(tmp_path):
    store = StageStore(tmp_path, "s")
    (store.dir / ".tmp-shard-left-by-a-kill.parquet").write_bytes(b"half")
    store = StageStore(tmp_path, "s")  # reopening cleans temp files
    assert list(store.dir.glob(".tmp-*")) == []
    assert store.write_shard([]) is None
    store.write_shard([_outcome("k1", 0), _outcome("k2", 1)])
    store.write_shard([dataclasses.replace(_outcome("k1", 0), status="rejected")])  # duplicate key
    done = store.load()
    assert sorted(done) == ["k1", "k2"] and done["k1"].status == "kept"
    assert len(store.shard_paths()) == 2


def test_row_key_depends_on_payload_config_and_backend():
    base = row_key('{"a":1}', "ocr", {"n": 1}, "rapidocr:1")
    assert base == row_key('{"a":1}', "ocr", {"n": 1}, "rapidocr:1")
    assert len({base, row_key('{"a":2}', "ocr", {"n": 1}, "rapidocr:1"),
                row_key('{"a":1}', "ocr", {"n": 2}, "rapidocr:1"), row_key('{"a":1}', "ocr", {"n": 1}, "x"),
                row_key('{"a":1}', "caption", {"n": 1}, "rapidocr:1")}) == 5


def _row(**kw) -> CavsrRow:
    return CavsrRow(id="r", order=0, source="in.jsonl", video=None, audio="a.wav", text="这次实验的结果很重要", **kw)


def _flaky(row, _backend, _settings):
    if row.id == "boom":
        raise RuntimeError("backend exploded")
    return Kept(dataclasses.replace(row, caption="seen")) if row.order % 2 == 0 else Dropped("odd")


def test_run_stage_records_every_row_and_resumes(tmp_path):
    rows = [dataclasses.replace(_row(), id=i, order=n) for n, i in enumerate(["a", "b", "boom", "d", "e"])]
    stage = Stage("toy", _flaky, None, CavsrSettings(), CavsrRow)
    config = PipelineConfig(shard_size=2, concurrency=2, progress=False)
    first = run_stage(stage, rows, tmp_path, config, RoleFactory(config))
    outs = first.outcomes
    assert first.attempted == 5
    assert [(o.row_id, o.status) for o in outs] == [("a", "kept"), ("b", "filtered"), ("boom", "rejected"),
                                                    ("d", "filtered"), ("e", "kept")]
    assert outs[2].reason == "RuntimeError: backend exploded" and outs[1].reason == "odd"
    assert CavsrRow.from_dict(__import__("json").loads(outs[0].payload)).caption == "seen"
    assert len(list((tmp_path / "stages" / "toy").glob("shard-*.parquet"))) == 3  # 5 rows / shard_size 2
    again = run_stage(stage, rows + [dataclasses.replace(_row(), id="f", order=5)], tmp_path, config,
                      RoleFactory(config))
    assert len(again.outcomes) == 6 and again.outcomes[:5] == outs and again.attempted == 1
    assert len(list((tmp_path / "stages" / "toy").glob("shard-*.parquet"))) == 4  # only row f was new


def test_stage_hash_uses_only_the_fields_it_reads():
    stage = Stage("ocr", _flaky, None, CavsrSettings(), CavsrRow, ("ocr_frames",))
    other = dataclasses.replace(stage, settings=CavsrSettings(max_candidates=1))
    assert work_items(stage, [_row()], "x")[0].key == work_items(other, [_row()], "x")[0].key
    more = dataclasses.replace(stage, settings=CavsrSettings(ocr_frames=9))
    assert work_items(stage, [_row()], "x")[0].key != work_items(more, [_row()], "x")[0].key


def test_apply_stage_rejects_bad_return_type():
    stage = Stage("bad", lambda r, b, s: r, None, None, CavsrRow)
    item = work_items(dataclasses.replace(stage, settings=CavsrSettings()), [_row()], "x")[0]
    with pytest.raises(TypeError, match="expected Kept or Dropped"):
        apply_stage(stage, RoleFactory(PipelineConfig()), item)


def test_count_asserts_accounting():
    per_stage = {"a": [_outcome("1", 0), _outcome("2", 1, "filtered")], "b": [_outcome("1", 0, "rejected")]}
    c = count(3, [Reject("x", "load", "bad")], per_stage, kept=0)
    assert (c.kept, c.filtered, c.rejected, c.failed) == (0, 1, 2, 0)
    assert c.stages["a"] == {"in": 2, "kept": 1, "filtered": 1, "rejected": 0, "failed": 0}
    assert c.summary() == ""
    with pytest.raises(AssertionError, match="row accounting"):
        count(4, [], per_stage, kept=0)


def test_swap_homophone_uses_pair_or_lexicon():
    assert swap_homophone("这次实验的结果很重要", "实验", "试验") == "这次试验的结果很重要"
    swapped = swap_homophone("公园很大")  # no pair given: first 2-char word with a homophone
    assert swapped != "公园很大" and swapped.endswith("很大") and len(swapped) == 4
    assert swap_homophone("") == ""


def test_rule_asr_simulates_two_systems():
    hint = AsrHint("这次实验的结果很重要", "实验", "试验")
    silence = np.zeros(160, np.float32)
    assert RuleAsr("reference").transcribe(silence, 16000, hint=hint) == "这次实验的结果很重要"
    assert RuleAsr("swap").transcribe(silence, 16000, hint=hint) == "这次试验的结果很重要"
    with pytest.raises(BackendError, match="reference text"):
        RuleAsr("swap").transcribe(silence, 16000)
    with pytest.raises(BackendError, match="mode"):
        RuleAsr("oracle")


def test_cer_filter_and_judge_stages():
    s = CavsrSettings()
    kept = cer_filter_stage(_row(asr_a="这次实验的结果很重要", asr_b="这次试验的结果很重要"), None, s)
    assert isinstance(kept, Kept) and kept.row.asr_cer == pytest.approx(1 / 10)
    assert isinstance(cer_filter_stage(_row(asr_a="一二", asr_b="一二"), None, s), Dropped)
    assert isinstance(cer_filter_stage(_row(asr_a="一二", asr_b="三四"), None, s), Dropped)  # CER 1
    judged = judge_stage(_row(asr_a="这次实验", asr_b="这次试验"), RuleJudge(), s)
    assert isinstance(judged, Kept) and judged.row.judge_reason == "homophone conflict"
    assert isinstance(judge_stage(_row(asr_a="嗯这次实验", asr_b="这次实验"), RuleJudge(), s), Dropped)


def test_validate_stage_mismatch_and_parse_failure():
    trace = ("Multimodal Perceive:\nVisual Cues:\nx\nAcoustic Analysis:\ny\nDisambiguation Reasoning:\nz\n"
             "Transcription:\n这次试验的结果很重要")
    row = _row(trace=trace)
    dropped = validate_stage(row, None, CavsrSettings(on_mismatch="filter"))
    assert isinstance(dropped, Dropped) and "!= reference" in dropped.reason
    kept = validate_stage(row, None, CavsrSettings(on_mismatch="keep"))
    assert isinstance(kept, Kept) and kept.row.trace_match is False
    ok = validate_stage(_row(trace=trace.replace("试验", "实验")), None, CavsrSettings())
    assert ok.row.trace_match is True and ok.row.trace_transcription == "这次实验的结果很重要"
    with pytest.raises(ValueError, match="does not parse"):
        validate_stage(_row(trace="just text"), None, CavsrSettings())


def test_candidates_prefer_the_named_pair():
    row = _row(asr_a="这次实验的结果很重要", asr_b="这次试验的结果很重要", target="实验", competitor="试验")
    (cand,) = candidates(row, limit=3)
    assert cand.pinyin == "shi yan" and cand.options[:2] == ("实验", "试验") and len(cand.options) == 3
    spans = candidates(dataclasses.replace(row, target="", competitor=""), limit=8)
    assert spans and spans[0].options[:2] == ("实", "试")  # span-level without the pair


def test_rule_captioner_names_colours():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[:, :4] = (40, 70, 200)  # blue top half
    frames[:, 4:] = (255, 255, 255)  # white bottom half
    # mean brightness = ((40 + 70 + 200) / 3 / 2 + 255 / 2) / 255 = 0.70 > 0.6 -> bright
    assert RuleCaptioner().caption(frames) == "A bright scene, blue in the upper half and white below, a static shot."
    assert RuleCaptioner().caption(frames // 2).startswith("An evenly lit scene")  # 0.35
    assert colour_name(np.array([0, 0, 0])) == "black"


def test_option_scoring_and_template_merger():
    assert option_overlap("实验", "实验室") == 1.0 and option_overlap("试验", "实验室") == 0.5
    assert pick_option(("试验", "实验", "市场"), "实验室") == ("B", 1.0)
    assert pick_option(("甲", "乙"), "丙") == (None, 0.0)
    assert pick_option(("实", "实"), "实验") == (None, 1.0)  # a tie decides nothing
    item = McqItem("q", "哪个？", ("试验", "实验"), "B")
    merged = TemplateMerger().merge(item, TeacherReply("sign 实验", "B"), TeacherReply("said 实验", "B"))
    assert merged.endswith("<answer>B</answer>") and "sign 实验" in merged and "said 实验" in merged
    with pytest.raises(ValueError, match="disagree"):
        TemplateMerger().merge(item, TeacherReply("x", "A"), TeacherReply("y", "B"))


def test_local_backends_fail_clearly(tmp_path):
    with pytest.raises(BackendError, match="not a local directory"):
        TransformersChat(str(tmp_path / "missing"))
    with pytest.raises(BackendError, match="no config.json"):
        TransformersChat(str(tmp_path))
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="pip install faster-whisper"):
            FasterWhisperAsr(str(tmp_path))
    else:
        with pytest.raises(BackendError, match="not a directory"):
            FasterWhisperAsr(str(tmp_path / "missing"))


def test_rapidocr_reads_rendered_text():
    from PIL import Image, ImageDraw, ImageFont

    from avcot.synth_media import find_cjk_font

    font_path, index = find_cjk_font()
    img = Image.new("RGB", (224, 224), (30, 40, 120))
    ImageDraw.Draw(img).text((30, 90), "实验室", font=ImageFont.truetype(font_path, 40, index=index),
                             fill=(255, 255, 255))
    ocr = RoleFactory(PipelineConfig()).get("ocr")
    boxes = ocr.read(np.asarray(img)[None])
    assert [b.text for b in boxes] == ["实验室"] and boxes[0].frame == 0
    x0, y0, x1, y1 = boxes[0].box
    assert 20 <= x0 < x1 <= 160 and 80 <= y0 < y1 <= 150


def test_rapidocr_reads_each_distinct_frame_once_and_keeps_the_frame_index():
    ocr = RoleFactory(PipelineConfig()).get("ocr")
    calls = []

    def engine(frame):
        calls.append(int(frame[0, 0, 0]))
        return [[[[1, 2], [9, 2], [9, 8], [1, 8]], f"t{frame[0, 0, 0]}", 0.9]], 0.01

    ocr._engine = engine
    a, b = np.zeros((1, 8, 8, 3), np.uint8), np.full((1, 8, 8, 3), 7, np.uint8)
    clip = np.concatenate([a, b, a])  # frames 0 and 2 are the same picture
    assert [(x.text, x.frame) for x in ocr.read(clip)] == [("t0", 0), ("t7", 1), ("t0", 2)]
    assert [x.text for x in ocr.read(b)] == ["t7"]  # another question about the same clip
    assert calls == [0, 7]
    ocr.read(np.full((1, 8, 9, 3), 7, np.uint8))  # same bytes per pixel, another shape: read
    assert calls == [0, 7, 7]
    ocr.CACHE_FRAMES = 1
    ocr.read(np.full((1, 8, 8, 3), 5, np.uint8))  # evicts the older frames
    ocr.read(a)
    assert calls == [0, 7, 7, 5, 0]


def test_export_schema_is_stable_for_empty_runs(tmp_path):
    from avcot.pipeline.cavsr import export_cavsr

    export_cavsr([], tmp_path)
    assert pl.read_parquet(tmp_path / "sft.parquet").columns == ["id", "video", "audio", "text", "pinyin",
                                                                  "cue", "trace"]
    assert (tmp_path / "sft.jsonl").read_text() == ""


def _failed(key: str, order: int, kind: str = "HTTP 503 at http://h/v1/chat/completions") -> Outcome:
    return dataclasses.replace(_outcome(key, order), status="failed", reason="TransientError: x", failure=kind)


def test_failed_rows_are_counted_pending_and_never_stored(tmp_path):
    per_stage = {"asr": [_outcome("1", 0), _outcome("2", 1), _outcome("3", 2)],
                 "judge": [_outcome("1", 0), _failed("2", 1), _failed("3", 2, "timeout at http://h")]}
    partial = count(3, [], per_stage, kept=1, attempted={"asr": 0, "judge": 3})
    assert (partial.kept, partial.failed, partial.stalled) == (1, 2, ())  # one row got an answer
    assert partial.failures == {"judge: HTTP 503 at http://h/v1/chat/completions": 1, "judge: timeout at http://h": 1}
    assert partial.stages["judge"]["failed"] == 2 and "failed=2" in partial.line()
    assert "2 of 3 row(s)" in partial.summary() and "rerun" in partial.summary()
    assert "counts as failed" not in partial.summary()
    # a rerun that only retried the two pending rows and got no answer for either: stalled
    stalled = count(3, [], per_stage, kept=1, attempted={"asr": 0, "judge": 2})
    assert stalled.stalled == ("judge",) and "judge got no answer" in stalled.summary()
    with pytest.raises(ValueError, match="must not be stored"):
        StageStore(tmp_path, "judge").write_shard([_outcome("1", 0), _failed("2", 1)])
    assert StageStore(tmp_path, "judge").load() == {}


def test_transient_failure_follows_the_cause_chain():
    from avcot.pipeline.backends import TransientError
    from avcot.pipeline.runner import transient_failure

    err = TransientError("down", kind="connection failed", endpoint="http://h/v1/chat/completions")
    assert transient_failure(err) == "connection failed at http://h/v1/chat/completions"
    try:
        try:
            raise err
        except TransientError as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert transient_failure(outer) == "connection failed at http://h/v1/chat/completions"
    assert transient_failure(TimeoutError()) == "timeout"
    assert transient_failure(ValueError("judge reply has neither KEEP nor DISCARD")) is None
    assert transient_failure(BackendError("HTTP 400")) is None
    import pickle

    back = pickle.loads(pickle.dumps(err))  # Ray ships exceptions between processes
    assert (back.kind, back.endpoint, str(back)) == (err.kind, err.endpoint, "down")
