"""The local Qwen2.5-Omni backend on the embedded tiny thinker: every role's request goes through the
project's loader and rollout engine, and its (random-weight) garbage reply becomes a clear reject."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avcot.pipeline import run_avrt, run_cavsr
from avcot.pipeline.chat_roles import (
    ChatAsr, ChatAudioTeacher, ChatCaptioner, ChatJudge, ChatMerger, ChatTraceWriter, ChatVisualTeacher,
)
from avcot.pipeline.config import config_from_dict
from avcot.pipeline.roles import AnnotationRequest, TeacherReply
from avcot.pipeline.vlm_ocr import ChatOcr
from avcot.records import McqItem

SYNTH = Path(__file__).parent / "data" / "synth"
OMNI = {"kind": "omni", "model_path": "tiny", "max_new_tokens": 6, "frame_size": [56, 56]}


@pytest.fixture(scope="module")
def omni():
    from avcot.pipeline.omni import OmniChat

    return OmniChat(**{k: v for k, v in OMNI.items() if k != "kind"})


@pytest.mark.slow
def test_every_role_goes_through_and_garbage_is_a_clear_error(omni):
    frames = np.zeros((2, 56, 56, 3), np.uint8)
    audio = np.zeros(8000, np.float32)
    item = McqItem(id="q", question="什么?", options=("猫", "狗"), answer="A")
    assert isinstance(ChatAsr(omni).transcribe(audio, 16000), str)
    assert isinstance(ChatCaptioner(omni).caption(frames), str)
    with pytest.raises(ValueError, match="neither KEEP nor DISCARD"):
        ChatJudge(omni).judge("这次实验", "这次试验")
    with pytest.raises(ValueError, match="VLM OCR reply is not the JSON"):
        ChatOcr(omni).split(frames)
    row = json.loads((SYNTH / "manifest.jsonl").read_text().splitlines()[0])
    req = AnnotationRequest("r", "", "zhe", "", (), (), "这次实验", "这次试验", audio=str(SYNTH / row["audio"]))
    assert isinstance(ChatTraceWriter(omni).write(req), str)
    assert isinstance(ChatVisualTeacher(omni).answer(item, frames), TeacherReply)
    assert isinstance(ChatAudioTeacher(omni).answer(item, audio, 16000), TeacherReply)
    with pytest.raises(ValueError, match="merger reply"):
        ChatMerger(omni).merge(item, TeacherReply("a", "A"), TeacherReply("b", "A"))


def _copy(src: Path, dst: Path, n: int, drop=()) -> Path:
    rows = [json.loads(x) for x in src.read_text().splitlines()[:n]]
    for r in rows:
        for k in ("video", "audio", "image"):
            if r.get(k):
                r[k] = str(src.parent / r[k])
        for k in drop:
            r.pop(k, None)
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return dst


@pytest.mark.slow
def test_both_pipelines_with_every_role_on_the_local_omni(tmp_path):
    roles = {r: {"kind": "chat", "chat": "omni"} for r in
             ("asr_a", "asr_b", "judge", "ocr", "caption", "annotator", "visual_teacher", "audio_teacher", "merger")}
    cfg = config_from_dict({"progress": False, "concurrency": 1, "chats": {"omni": OMNI}, "roles": roles,
                            "cavsr": {"ocr_frames": 2, "ocr_size": [56, 56]},
                            "avrt": {"visual_frames": 2, "frame_size": [56, 56], "require_both_correct": False}})
    cavsr = run_cavsr(_copy(SYNTH / "manifest.jsonl", tmp_path / "c.jsonl", 2, drop=("text",)), tmp_path / "c", cfg)
    avrt = run_avrt(_copy(SYNTH / "mcq.jsonl", tmp_path / "a.jsonl", 2), tmp_path / "a", cfg)
    for counts in (cavsr, avrt):
        assert counts.rows_in == 2 == counts.kept + counts.filtered + counts.rejected + counts.failed
        assert counts.failed == 0
    rejects = [json.loads(x) for x in (tmp_path / "a" / "rejects.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rejects} == {"merge"} and all("merger reply" in r["reason"] for r in rejects)
