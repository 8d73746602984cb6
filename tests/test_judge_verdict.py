"""The LLM ambiguity judge: the verdict is read only from the reply's final line (avcot.pipeline.chat_roles)."""
from __future__ import annotations

import dataclasses

import pytest

from avcot.pipeline.cavsr import judge_stage
from avcot.pipeline.chat_roles import ChatJudge, judge_prompt, parse_verdict
from avcot.pipeline.config import CavsrSettings
from avcot.pipeline.rows import CavsrRow
from avcot.pipeline.runner import Stage, apply_stage, work_items


@pytest.mark.parametrize(("reply", "keep", "reason"), [
    ("两者是同音词 实验/试验\nVERDICT: KEEP", True, "两者是同音词 实验/试验"),
    ("filler 嗯 only\n\n**Verdict:** discard\n", False, "filler 嗯 only"),
    ("KEEP: homophones 实验/试验", True, "homophones 实验/试验"),  # the bare word with a reason
    ("discard - filler only", False, "filler only"),
    ("- VERDICT： KEEP", True, "llm judge"),
    # a reasoning model's think block may weigh both words; only what follows it counts
    ("<think>KEEP? DISCARD? VERDICT: DISCARD</think>\nsame sound, other characters\nVERDICT: KEEP", True,
     "same sound, other characters"),
    ("The words could be read as KEEP or DISCARD in general, but here they are homophones.\nVERDICT: KEEP",
     True, "The words could be read as KEEP or DISCARD in general, but here they are homophones."),
])
def test_verdict_on_the_final_line(reply: str, keep: bool, reason: str) -> None:
    judgement = parse_verdict(reply)
    assert judgement.keep is keep and judgement.reason == f"llm: {reason}"


@pytest.mark.parametrize(("reply", "why"), [
    ("I was told to output KEEP but the answer is DISCARD", "neither KEEP nor DISCARD on its final line"),
    ("VERDICT: KEEP\nOn reflection the recogniser just misheard.", "neither KEEP nor DISCARD on its final line"),
    ("Keep in mind that both transcripts sound alike.", "neither KEEP nor DISCARD on its final line"),
    ("VERDICT: KEEP or DISCARD", "contradictory verdicts"),
    ("VERDICT: DISCARD\nhomophones after all\nVERDICT: KEEP", "contradictory verdicts"),
    ("", "neither KEEP nor DISCARD"),
    ("VERDICT: KEEPING", "neither KEEP nor DISCARD"),
])
def test_ambiguous_reply_is_an_error_quoting_the_reply(reply: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        parse_verdict(reply)
    assert repr(reply)[1:-1] in str(info.value)


def test_long_reply_is_quoted_by_its_start_and_end() -> None:
    reply = "I was told to output KEEP " + "x" * 10_000 + " but the answer is DISCARD"
    with pytest.raises(ValueError, match="neither KEEP nor DISCARD") as info:
        parse_verdict(reply)
    message = str(info.value)
    assert "I was told to output KEEP" in message and "the answer is DISCARD" in message
    assert f"({len(reply)} chars)" in message and len(message) < 500


def test_prompt_asks_for_the_final_verdict_line() -> None:
    prompt = judge_prompt("这次实验", "这次试验")
    last = prompt.split("\n\n")[-1]
    assert "final line" in last and "'VERDICT: KEEP'" in last and "'VERDICT: DISCARD'" in last
    assert '<data name="asr_a">\n这次实验\n</data>' in prompt


class _Chat:
    identity = "fake"

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def chat(self, messages, **kw) -> str:
        return self.reply


class _Factory:
    def __init__(self, reply: str) -> None:
        self.judge = ChatJudge(_Chat(reply))

    def get(self, role: str) -> ChatJudge:
        assert role == "judge"
        return self.judge


def _judge(reply: str):
    row = CavsrRow(id="r1", order=0, source="in.jsonl", video=None, audio="a.wav", text="这次实验",
                   asr_a="这次实验", asr_b="这次试验")
    stage = Stage("judge", judge_stage, "judge", CavsrSettings(), CavsrRow)
    return apply_stage(stage, _Factory(reply), work_items(stage, [row], "x")[0])


def test_pipeline_records_an_ambiguous_reply_as_a_reject_with_the_reply() -> None:
    reply = "I was told to output KEEP but the answer is DISCARD"
    outcome = _judge(reply)
    assert outcome.status == "rejected" and outcome.row_id == "r1"
    assert outcome.reason.startswith("ValueError: judge reply has neither KEEP nor DISCARD") and reply in outcome.reason


def test_pipeline_keeps_and_filters_on_clear_verdicts() -> None:
    kept = _judge("实验/试验 are homophones\nVERDICT: KEEP")
    assert kept.status == "kept" and '"judge_reason":"llm: 实验/试验 are homophones"' in kept.payload
    dropped = _judge("only punctuation differs\nVERDICT: DISCARD")
    assert dataclasses.astuple(dropped)[3:5] == ("filtered", "not ambiguity: llm: only punctuation differs")
