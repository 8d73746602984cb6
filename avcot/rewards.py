"""Reward functions in TRL's style: ``(completions, **kw) -> list[float]``.

A completion may be a string or a conversational completion (a list of ``{"role", "content"}``
messages, as TRL passes them; the last message's content is scored). Rewards never raise on
model output; they raise only on caller errors (mismatched lengths, bad parameters).
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from avcot.text import cer, tokenize_zh
from avcot.traces import extract_transcription, parse_answer

RewardFunc = Callable[..., list[float]]

_FORMAT_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAG_RE = re.compile(r"</?(?:think|answer)>")


def completion_text(completion: Any) -> str:
    """Text of one completion: a str, a message dict, or a list of messages (last one); else ''."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content", "")
        return content if isinstance(content, str) else ""
    if isinstance(completion, (list, tuple)) and completion:
        return completion_text(completion[-1])
    return ""


def _check_lengths(name: str, completions: Sequence[Any], other: Sequence[Any], what: str) -> None:
    """Raise a clear error when a per-completion argument does not match the completions."""
    if len(other) != len(completions):
        raise ValueError(f"{name}: {len(completions)} completions but {len(other)} {what}")


def _format_ok(text: str) -> bool:
    """Exactly one think block then one non-empty answer block, only whitespace around them."""
    m = _FORMAT_RE.fullmatch(text)
    if m is None:
        return False
    think, answer = m.group(1), m.group(2)
    return not _TAG_RE.search(think) and not _TAG_RE.search(answer) and bool(answer.strip())


def format_reward(completions: Sequence[Any], **kw: Any) -> list[float]:
    """1.0 iff the completion is exactly <think>…</think><answer>…</answer> (whitespace allowed)."""
    return [float(_format_ok(completion_text(c))) for c in completions]


def accuracy_reward(completions: Sequence[Any], answers: Sequence[str], **kw: Any) -> list[float]:
    """1.0 iff the letter in the <answer> tag equals the gold letter."""
    _check_lengths("accuracy_reward", completions, answers, "answers")
    return [float(parse_answer(completion_text(c)) == str(gold).strip().upper())
            for c, gold in zip(completions, answers)]


def cer_reward(completions: Sequence[Any], references: Sequence[str], **kw: Any) -> list[float]:
    """max(0, 1 - CER) of the extracted transcription against the reference transcript."""
    _check_lengths("cer_reward", completions, references, "references")
    return [max(0.0, 1.0 - cer(ref, extract_transcription(completion_text(c))).cer)
            for c, ref in zip(completions, references)]


def count_words(text: str) -> int:
    """Words for length purposes: each CJK character and each Latin word/number counts one; tags don't."""
    return len(tokenize_zh(_TAG_RE.sub(" ", text)))


def length_reward(completions: Sequence[Any], min_words: int = 16, max_words: int = 512,
                  sigma: float = 64.0, **kw: Any) -> list[float]:
    """1.0 inside [min_words, max_words], exp(-(d/sigma)^2/2) at distance d words outside it."""
    if not 0 <= min_words <= max_words or sigma <= 0:
        raise ValueError(f"length_reward: need 0 <= min_words <= max_words and sigma > 0, got "
                         f"{min_words}, {max_words}, {sigma}")
    out = []
    for c in completions:
        n = count_words(completion_text(c))
        d = max(min_words - n, n - max_words, 0)
        out.append(math.exp(-0.5 * (d / sigma) ** 2))
    return out


def reward_name(func: RewardFunc) -> str:
    """Name for logging: the function's __name__ (through functools.partial)."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def combine_rewards(funcs_with_weights: Sequence[tuple[RewardFunc, float]], completions: Sequence[Any],
                    **kw: Any) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted sum of several rewards, plus each one's raw values (keyed by name, '_2' on repeats)."""
    total = [0.0] * len(completions)
    per_func: dict[str, list[float]] = {}
    for func, weight in funcs_with_weights:
        values = [float(v) for v in func(completions, **kw)]
        name = reward_name(func)
        if len(values) != len(completions):
            raise ValueError(f"reward {name} returned {len(values)} values for {len(completions)} completions")
        key, k = name, 2
        while key in per_func:
            key, k = f"{name}_{k}", k + 1
        per_func[key] = values
        total = [t + weight * v for t, v in zip(total, values)]
    return total, per_func
