"""Every parser and reward returns the right type on adversarial text and non-str input, and never hangs.

The hang guard (a SIGALRM timer) fails a call that runs past HANG_S seconds: far above the
sub-second these calls take on a 10 MB input, far below what a quadratic scan takes (the old
``<answer>(.*?)</answer>`` lazy regex needed 8 s for 100 KB of unclosed tags, minutes for 1 MB).
It guards against hangs; it measures no speed. The default run uses 500 KB inputs; the 10 MB
run is marked slow.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from avcot.filters import Judgement
from avcot.pipeline.chat_roles import parse_verdict
from avcot.records import LETTERS
from avcot.rewards import (
    MAX_SCORED_CHARS,
    RewardInputs,
    accuracy_reward,
    cer_reward,
    combine_rewards,
    completion_text,
    count_words,
    format_reward,
    length_reward,
)
from avcot.traces import AVCoTTrace, extract_transcription, merge_traces, parse_answer, parse_avcot, split_think_answer

HANG_S = 5

# name -> (prefix, repeated unit, suffix): the suffix makes a backtracking scan fail late
PATTERNS = {
    "open_answer": ("", "<answer>", ""),
    "open_answer_then_closed": ("<answer>B</answer>", "<answer> answer is ", ""),
    "answer_keyword_whitespace": ("<answer>answer", " ", "x</answer>"),
    "answer_parens": ("<answer>", "(", "x</answer>"),
    "open_think": ("", "<think>", "<answer>C</answer>"),
    "closed_think": ("", "<think>x</think>", ""),
    "close_tags": ("", "</think></answer>", ""),
    "nested": ("", "<think><answer><think>", ""),
    "think_answer_pairs": ("<think>", "</think> <answer></answer>", "x"),
    "transcription_header": ("", "Transcription:", ""),
    "transcription_lines": ("", "**Transcription**: 好\n", ""),
    "header_whitespace": ("Transcription", " ", "x"),
    "hashes": ("", "#", "Transcription"),
    "verdict_words": ("", "KEEP DISCARD VERDICT: ", ""),
    "spaces": ("", " ", "x"),
    "newlines": ("", "\n", ""),
    "blank_lines": ("", " \n", ""),
    "nul": ("", "\x00", ""),
    "lone_surrogate": ("", "\ud800", ""),
    "quotes": ("", "\"*`", ""),
}


def adversarial(name: str, size: int) -> str:
    """About `size` characters: the named pattern's unit repeated between its prefix and suffix."""
    prefix, unit, suffix = PATTERNS[name]
    return prefix + unit * (size // len(unit)) + suffix


class Hang(BaseException):
    """A call ran past the hang guard (a BaseException, so that a parser's own ``except Exception``
    cannot swallow it and return a normal-looking result)."""


@contextlib.contextmanager
def hang_guard(what: str) -> Iterator[None]:
    """Raise Hang inside the call when it runs past HANG_S (the regex engine checks signals)."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"{what} ran past {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    start = time.monotonic()
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:  # give back a timer that was running (pytest-timeout's, say), minus our time
            left = max(outer_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def guarded(what: str, fn: Callable[[], Any]) -> Any:
    try:
        with hang_guard(what):
            return fn()
    except Hang as exc:
        pytest.fail(str(exc))


def _is_score(values: Any, n: int = 1) -> bool:
    return (isinstance(values, list) and len(values) == n
            and all(isinstance(v, float) and 0.0 <= v <= 1.0 and not math.isnan(v) for v in values))


def _verdict(reply: Any) -> Judgement | None:
    try:
        return parse_verdict(reply)
    except ValueError:  # the intended reject; anything else fails the test
        return None


def check_all(text: Any) -> None:
    """Call every parser and reward on `text` under the hang guard and check each result's type."""
    parsed = guarded("parse_avcot", lambda: parse_avcot(text))
    assert parsed is None or (isinstance(parsed, AVCoTTrace) and parsed.transcription)
    extracted = guarded("extract_transcription", lambda: extract_transcription(text))
    assert isinstance(extracted, str) and "\n" not in extracted
    assert guarded("parse_answer", lambda: parse_answer(text)) in (None, *LETTERS)
    reasoning, letter = guarded("split_think_answer", lambda: split_think_answer(text))
    assert isinstance(reasoning, str) and letter in (None, *LETTERS)
    assert isinstance(guarded("merge_traces", lambda: merge_traces("q", ["x", "y"], text, text)), str)
    assert isinstance(guarded("completion_text", lambda: completion_text(text)), str)
    # count_words tokenises in pure Python (linear, ~0.5 µs a character); rewards call it only on
    # text up to MAX_SCORED_CHARS, so that is the size it gets here
    scored = text[:MAX_SCORED_CHARS] if isinstance(text, str) else text
    assert isinstance(guarded("count_words", lambda: count_words(scored)), int)
    assert _is_score(guarded("format_reward", lambda: format_reward([text])))
    assert _is_score(guarded("accuracy_reward", lambda: accuracy_reward([text], answers=["B"])))
    assert _is_score(guarded("cer_reward", lambda: cer_reward([text], references=["差拨"])))
    assert _is_score(guarded("length_reward", lambda: length_reward([text])))
    total, per = guarded("combine_rewards", lambda: combine_rewards(
        [(format_reward, 1.0), (accuracy_reward, 1.0), (cer_reward, 1.0), (length_reward, 1.0)],
        [text], RewardInputs(references=("差拨",), answers=("B",))))
    assert len(total) == 1 and 0.0 <= total[0] <= 4.0 and set(per) == {
        "format_reward", "accuracy_reward", "cer_reward", "length_reward"}
    verdict = guarded("parse_verdict", lambda: _verdict(text))
    assert verdict is None or isinstance(verdict, Judgement)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_parsers_and_rewards_on_500kb_adversarial_text(name: str) -> None:
    check_all(adversarial(name, 500_000))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_parsers_and_rewards_on_10mb_adversarial_text(name: str) -> None:
    check_all(adversarial(name, 10_000_000))


def _deep_list(depth: int) -> list[Any]:
    deep: list[Any] = ["<answer>B</answer>"]
    for _ in range(depth):
        deep = [deep]
    return deep


class BrokenMessage(dict):
    """A message whose .get raises: still only model output, never a reason to raise."""

    def get(self, *args: Any) -> Any:
        raise RuntimeError("broken message")


NON_STR = {
    "none": None, "bytes": b"<answer>B</answer>", "int": 7, "float": math.nan, "dict": {"content": 5},
    "message_list": [{"role": "assistant", "content": 5}], "empty_list": [], "deep_list": _deep_list(50_000),
    "object": object(), "broken_message": BrokenMessage(), "set": {"<answer>B</answer>"},
}


@pytest.mark.parametrize("name", sorted(NON_STR))
def test_non_str_input_takes_the_no_answer_path(name: str) -> None:
    value = NON_STR[name]
    check_all(value)
    assert parse_avcot(value) is None and parse_answer(value) is None
    assert extract_transcription(value) == "" and split_think_answer(value) == ("", None)
    assert completion_text(value) == "" and count_words(value) == 0
    empty = [format_reward([""]), accuracy_reward([""], answers=["B"]), cer_reward([""], references=["差拨"]),
             length_reward([""])]
    assert [format_reward([value]), accuracy_reward([value], answers=["B"]),
            cer_reward([value], references=["差拨"]), length_reward([value])] == empty
    with pytest.raises(ValueError, match="not text"):
        parse_verdict(value)


def test_adversarial_text_keeps_its_answer() -> None:
    """The parsers still find what is there after (or before) a flood of unclosed tags."""
    flood = "<answer>" * 200_000
    assert guarded("parse_answer", lambda: parse_answer("<answer>B</answer>" + flood)) == "B"
    assert guarded("parse_answer", lambda: parse_answer(flood + "C</answer>")) == "C"
    assert guarded("split_think_answer", lambda: split_think_answer("<think>看</think>" + "<think>" * 200_000
                                                                     + "<answer>D</answer>")) == ("看", "D")
    text = "Transcription:\n" * 100_000 + "Transcription: 林冲对差拨说"
    assert guarded("extract_transcription", lambda: extract_transcription(text)) == "林冲对差拨说"
    assert guarded("extract_transcription", lambda: extract_transcription("林冲" + "\n \n" * 500_000)) == "林冲"
