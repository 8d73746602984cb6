"""Raw clips (no reference), ASR over /v1/audio/transcriptions, VLM OCR, the hearing trace writer,
the AVRT paper's teacher/merger format, and ingest."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from openai_stub import ENV, KEY, FakeServer

from avcot.pipeline import run_cavsr
from avcot.pipeline.backends import BackendError, TransientError
from avcot.pipeline.chat_roles import ChatMerger, ChatTraceWriter, parse_teacher_reply
from avcot.pipeline.config import config_from_dict
from avcot.pipeline.roles import AnnotationRequest, OcrSplit, TeacherReply
from avcot.pipeline.rules import RuleAsr
from avcot.pipeline.transcribe_api import OpenAITranscriber
from avcot.pipeline.vlm_ocr import ChatOcr, parse_ocr_reply
from avcot.records import McqItem

SYNTH = Path(__file__).parent / "data" / "synth"


@pytest.fixture()
def servers(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    asr, chat = FakeServer(), FakeServer()
    yield asr, chat
    asr.close()
    chat.close()


def _endpoint(server) -> dict:
    return {"base_url": server.url, "api_key_env": ENV, "backoff_s": 0.0, "max_retries": 1, "timeout_s": 10}


def _raw_manifest(tmp_path: Path, n: int) -> Path:
    """The first n synthetic rows without their reference (and without the oracle fields)."""
    rows = [json.loads(x) for x in (SYNTH / "manifest.jsonl").read_text().splitlines()[:n]]
    path = tmp_path / "raw.jsonl"
    keep = ("id", "video", "audio")
    path.write_text("".join(json.dumps({k: str(SYNTH / r[k]) if k != "id" else r[k] for k in keep}) + "\n"
                            for r in rows))
    return path


def test_rule_asr_without_reference_names_the_setting_to_change():
    with pytest.raises(BackendError, match=r"teacher_asr\.transcripts: <your manifest> for AVRT, asr_a"):
        RuleAsr().transcribe(np.zeros(160, np.float32), 16000, hint=None)
    offline = (Path(__file__).parents[1] / "configs" / "pipeline_offline.yaml").read_text().splitlines()
    marked = [i for i, line in enumerate(offline) if "CHANGE THIS LINE" in line]
    assert marked and any(offline[j].lstrip().startswith("teacher_asr:") for j in range(marked[0], marked[0] + 4))


def test_raw_clips_run_end_to_end_and_the_trace_transcription_is_the_target(tmp_path, servers):
    asr, chat = servers
    asr.transcript = "这次试验的结果很重要"  # the first recogniser picked the wrong homophone
    chat.default_reply = "这次实验的结果很重要"
    cfg = config_from_dict({"progress": False, "chats": {"c": {"kind": "openai", "model": "m", **_endpoint(chat)}},
                            "roles": {"asr_a": {"kind": "openai_asr", "model": "whisper", **_endpoint(asr)},
                                      "asr_b": {"kind": "chat", "chat": "c"}},
                            "cavsr": {"ocr_frames": 1}})
    counts = run_cavsr(_raw_manifest(tmp_path, 2), tmp_path / "out", cfg)
    assert counts.rows_in == 2 == counts.kept + counts.filtered + counts.rejected + counts.failed
    form = asr.requests[0]["body"]
    assert asr.requests[0]["path"] == "/v1/audio/transcriptions" and asr.requests[0]["auth"] == f"Bearer {KEY}"
    assert form["model"] == "whisper" and form["language"] == "zh" and form["response_format"] == "verbose_json"
    assert form["timestamp_granularities[]"] == "segment" and form["file"][2][:4] == b"RIFF"
    sft = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "sft.jsonl").read_text().splitlines())}
    # clip 0 shows 实验室 in the background: the writer resolves 试验 -> 实验 from the visual cue
    assert sft["synth-s0-0000"]["text"] == "这次实验的结果很重要"
    assert "Transcription:\n这次实验的结果很重要" in sft["synth-s0-0000"]["trace"]
    import polars as pl
    notes = pl.read_parquet(tmp_path / "out" / "annotations.parquet")
    assert not notes["reference"].any()
    again = run_cavsr(_raw_manifest(tmp_path, 2), tmp_path / "out", cfg)
    assert again.kept == counts.kept and len(asr.requests) == 2  # resumed: nothing asked again


def test_transcription_api_retries_500_segments_parsed_and_400_is_permanent(servers):
    asr, _ = servers
    asr.segments = [{"start": 0.0, "end": 1.5, "text": " 你好 "}, {"start": 1.5, "end": 2.0, "text": "世界"}]
    asr.failures = [500]
    t = OpenAITranscriber(model="w", **_endpoint(asr))
    got = t.transcribe_segments(np.zeros(1600, np.float32), 16000)
    assert got.text == asr.transcript and [s.text for s in got.segments] == ["你好", "世界"]
    assert len(asr.requests) == 2
    asr.failures = [400]
    with pytest.raises(BackendError) as err:
        t.transcribe(np.zeros(1600, np.float32), 16000)
    assert not isinstance(err.value, TransientError)
    asr.failures = [503, 503]
    with pytest.raises(TransientError):
        t.transcribe(np.zeros(1600, np.float32), 16000)


def test_speed_settings_of_openai_asr_stay_out_of_the_identity():
    base = {"kind": "openai_asr", "base_url": "http://x/v1", "model": "w"}
    a = config_from_dict({"roles": {"asr_a": base}}).role_identity("asr_a")
    b = config_from_dict({"roles": {"asr_a": {**base, "timeout_s": 3, "max_retries": 9}}}).role_identity("asr_a")
    c = config_from_dict({"roles": {"asr_a": {**base, "language": "en"}}}).role_identity("asr_a")
    assert a == b != c


@pytest.mark.parametrize("reply, expected", [
    ('{"subtitles": ["你好"], "background": ["台标", "台标"]}', OcrSplit(("你好",), ("台标",))),
    ('```json\n{"subtitles": []}\n```', OcrSplit((), ())),
])
def test_ocr_reply_parses(reply, expected):
    assert parse_ocr_reply(reply) == expected


@pytest.mark.parametrize("reply", ["no text here", "[1, 2]", '{"subtitles": [1]}', '{"other": []}', None, "{" * 10000])
def test_ocr_reply_garbage_is_a_reason(reply):
    assert isinstance(parse_ocr_reply(reply), str)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.integers(), st.lists(st.text())))
def test_ocr_parser_never_raises(reply):
    assert isinstance(parse_ocr_reply(reply), OcrSplit | str)


def test_vlm_ocr_garbage_is_a_reject_that_records_the_reply(tmp_path, servers):
    _, chat = servers
    chat.default_reply = "I see some text, maybe."
    cfg = config_from_dict({"progress": False, "chats": {"c": {"kind": "openai", "model": "m", **_endpoint(chat)}},
                            "roles": {"ocr": {"kind": "chat", "chat": "c"}}, "cavsr": {"ocr_frames": 2}})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({**json.loads(x), "video": str(SYNTH / json.loads(x)["video"]),
                                            "audio": str(SYNTH / json.loads(x)["audio"])}) + "\n"
                                for x in (SYNTH / "manifest.jsonl").read_text().splitlines()[:2]))
    counts = run_cavsr(manifest, tmp_path / "out", cfg)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert counts.rejected == 2 and all(r["stage"] == "ocr" and "I see some text" in r["reason"] for r in rejects)
    parts = chat.requests[0]["body"]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"] and "subtitles" in parts[-1]["text"]
    chat.default_reply = '{"subtitles": ["这次实验的结果很重要"], "background": ["实验室"]}'
    assert ChatOcr(_client(chat)).split(np.zeros((1, 28, 28, 3), np.uint8)).background == ("实验室",)


def _client(server):
    from avcot.pipeline.openai_compat import EndpointConfig, OpenAIChat
    return OpenAIChat(EndpointConfig(model="m", **_endpoint(server)))


def _request(**kw) -> AnnotationRequest:
    row = json.loads((SYNTH / "manifest.jsonl").read_text().splitlines()[0])
    return AnnotationRequest(row_id="r", reference="", pinyin="zhe ci", caption="a lab", ocr=(), candidates=(),
                             asr_a="这次试验", asr_b="这次实验", audio=str(SYNTH / row["audio"]),
                             video=str(SYNTH / row["video"]), **kw)


def test_trace_writer_hears_the_audio_and_sends_frames_only_when_asked(servers):
    _, chat = servers
    ChatTraceWriter(_client(chat)).write(_request())
    parts = chat.requests[-1]["body"]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["input_audio", "text"]
    assert '<data name="asr_hypotheses">' in parts[-1]["text"] and "You hear the clip's audio" in parts[-1]["text"]
    assert '<data name="transcript">' not in parts[-1]["text"]  # a raw clip has no reference to leak
    ChatTraceWriter(_client(chat), frames=2, frame_size=[56, 56]).write(_request())
    parts = chat.requests[-1]["body"]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "input_audio", "text"]


@pytest.mark.parametrize("reply, letter", [
    ("Description: a dog\nReasoning: it barks\nAnswer: B", "B"),
    ("**Description:** x\n**Answer:** (c)", "C"),
    ("<think>hmm</think><answer>D</answer>", "D"),
    ("Answer: maybe", None),
    ("Answer: Because", None),
])
def test_teacher_reply_in_the_paper_format(reply, letter):
    got = parse_teacher_reply(reply)
    assert got.answer == letter
    # a letter's line leaves the reasoning; an unreadable answer line stays in it (nothing dropped)
    assert ("Answer:" in got.reasoning) == (letter is None and "Answer:" in reply)


def test_merger_gets_the_correct_answer_and_must_reach_it(servers):
    _, chat = servers
    item = McqItem(id="q", question="哪个?", options=("猫", "狗"), answer="B")
    chat.default_reply = "<think>I saw a dog and heard barking.</think><answer>B</answer>"
    merged = ChatMerger(_client(chat)).merge(item, TeacherReply("dog", "B"), TeacherReply("bark", "A"))
    assert merged.endswith("<answer>B</answer>")
    assert '<data name="correct_answer">\nB\n</data>' in chat.requests[-1]["body"]["messages"][0]["content"]
    chat.default_reply = "<think>cat</think><answer>A</answer>"
    with pytest.raises(ValueError, match="not the correct answer B"):
        ChatMerger(_client(chat)).merge(item, TeacherReply("dog", "B"), TeacherReply("bark", "A"))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_ingest_builds_a_manifest_cuts_long_files_and_rejects_bad_ones(tmp_path):
    from avcot.pipeline.__main__ import main

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(SYNTH / "clips" / "synth-s0-0000.mp4", media / "short.mp4")
    (media / "short.txt").write_text("这次实验的结果很重要\n", encoding="utf-8")
    long = media / "long talk.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(SYNTH / "clips" / "synth-s0-0000.wav"),
                    "-i", str(SYNTH / "clips" / "synth-s0-0001.wav"), "-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1",
                    str(long)], check=True)
    (media / "long talk.srt").write_text("1\n00:00:00,000 --> 00:00:03,500\n第一句\n\n"
                                         "2\n00:00:03,900 --> 00:00:06,700\n第二句\n", encoding="utf-8")
    (media / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "data" / "manifest.jsonl"
    assert main(["ingest", "--videos", str(media), "--out", str(out), "--max-seconds", "5"]) == 0
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["short"] == {"id": "short", "video": str((media / "short.mp4").resolve()),
                             "text": "这次实验的结果很重要"}
    assert rows["long_talk_000"]["text"] == "第一句" and rows["long_talk_001"]["text"] == "第二句"
    from avcot.media import probe
    assert all(probe(out.parent / rows[k]["audio"]).duration_s <= 5 for k in ("long_talk_000", "long_talk_001"))
    (reject,) = map(json.loads, out.with_suffix(".rejects.jsonl").read_text().splitlines())
    assert reject["id"] == "broken" and reject["reason"]


def _rejects(out: Path) -> list[dict]:
    path = out / "rejects.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_cavsr_rule_asr_reads_its_transcripts_manifest_for_rows_without_text(tmp_path):
    """The fix the rule_asr error names works for CAVSR too: asr_a/asr_b look the clip up in `transcripts`."""
    raw = _raw_manifest(tmp_path, 2)
    table = str(SYNTH / "manifest.jsonl")
    plain = config_from_dict({"progress": False, "cavsr": {"ocr_frames": 1}})
    run_cavsr(raw, tmp_path / "plain", plain)
    stopped = _rejects(tmp_path / "plain")
    assert len(stopped) == 2 and all("asr_a.transcripts" in json.dumps(r, ensure_ascii=False) for r in stopped)
    told = config_from_dict({"progress": False, "cavsr": {"ocr_frames": 1},
                             "roles": {"asr_a": {"kind": "rule_asr", "mode": "reference", "transcripts": table},
                                       "asr_b": {"kind": "rule_asr", "mode": "swap", "transcripts": table}}})
    counts = run_cavsr(raw, tmp_path / "told", told)
    assert counts.rows_in == 2 == counts.kept + counts.filtered + counts.rejected + counts.failed
    assert not [r for r in _rejects(tmp_path / "told") if "rule_asr simulates" in json.dumps(r, ensure_ascii=False)]
    assert counts.kept >= 1  # heard through the table: the dual-ASR disagreement and the rest of the chain ran
