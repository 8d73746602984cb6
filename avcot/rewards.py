"""Reward functions in TRL's style: ``(completions, **kw) -> list[float]``.

What a reward is given. ``completions``: the decoded completions, one per sampled sequence (the G completions
of a prompt are adjacent). Keyword arguments: the fields of ``RewardInputs`` that the batch has, one value per
completion (the prompt's value repeated G times), and nothing else (no model inputs, no media):

- ``references``: the reference text: the transcript (CAVSR) or the gold option letter (MCQ); always given.
- ``answers``: the gold option letter (MCQ batches only).

A reward names the fields it reads and takes ``**kw`` for the rest, so one written for TRL's
``GRPOTrainer`` works here too. Fixed settings (``length_reward``'s word range) are bound with
``functools.partial`` or by a wrapper function named in the config.

A completion may be a string or a conversational completion (a list of ``{"role", "content"}``
messages, as TRL passes them; the last message's content is scored); anything else (None, bytes,
numbers, nested lists) scores as the empty completion. Rewards never raise on model output and run
in linear time on it; they raise only on caller errors (mismatched lengths, bad parameters, a
reference that is not text).

Departure, for bounded cost: a completion whose text to tokenise (CER reward: the extracted
transcription; length reward: the completion without tags) is longer than ``MAX_SCORED_CHARS``
characters after collapsing whitespace runs scores 0.0 on ``cer_reward`` and ``length_reward``
instead of being tokenised (pure-Python tokenising runs at about 0.5 µs a character, so a 10 MB
completion would stall the reward loop for seconds). Such output is far past any generation
budget. Collapsing whitespace first keeps floods of blank lines scored exactly (a run of
whitespace separates tokens the same as one space does).
"""
from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avcot.text import cer, tokenize_zh
from avcot.traces import extract_transcription, parse_answer, parse_avcot

RewardFunc = Callable[..., list[float]]
"""``(completions, *, references, answers=None, **kw) -> list[float]``: one float per completion."""

MAX_SCORED_CHARS = 200_000
"""Longer texts (whitespace runs collapsed) score 0.0 on the CER and length rewards, untokenised."""
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@dataclass(frozen=True)
class RewardInputs:
    """What the rewards may read beside the completions: one entry per completion, in completion order."""

    references: tuple[str, ...]
    """Reference text: the transcript (CAVSR) or the gold option letter (MCQ)."""
    answers: tuple[str, ...] | None = None
    """Gold option letter (MCQ batches only; None for transcription batches, which have no options)."""

    def __len__(self) -> int:
        return len(self.references)

    def repeat(self, group_size: int) -> RewardInputs:
        """Each entry repeated `group_size` times: per-prompt values -> per-completion values (G per prompt)."""
        def rep(values):
            return None if values is None else tuple(v for v in values for _ in range(group_size))

        return RewardInputs(references=rep(self.references), answers=rep(self.answers))

    def kwargs(self) -> dict[str, tuple[str, ...]]:
        """The keyword arguments each reward is called with: the fields this batch has (see the module doc)."""
        out = {"references": self.references}
        if self.answers is not None:
            out["answers"] = self.answers
        return out


def _message_text(message: Any) -> str:
    """A str as is, a message dict's str content; else ''."""
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        content = message.get("content", "")
        return content if isinstance(content, str) else ""
    return ""


def completion_text(completion: Any) -> str:
    """Text of one completion: a str, a message dict, or a list of messages (last one); else ''.

    Only one level of list is unwrapped (a conversational completion), so a deeply nested list
    cannot recurse; never raises.
    """
    try:
        if isinstance(completion, (list, tuple)):
            return _message_text(completion[-1]) if completion else ""
        return _message_text(completion)
    except Exception:  # noqa: BLE001 - a dict subclass with a broken .get is still model output
        return ""


def _check_lengths(name: str, completions: Sequence[Any], other: Sequence[Any], what: str) -> None:
    """Raise a clear error when a per-completion argument does not match the completions."""
    if len(other) != len(completions):
        raise ValueError(f"{name}: {len(completions)} completions but {len(other)} {what}")


def _has_tag(text: str) -> bool:
    return any(tag in text for tag in _TAGS)


def _format_ok(text: str) -> bool:
    """Exactly one think block then one non-empty answer block, only whitespace around them.

    Plain string steps instead of a lazy two-block regex, which backtracks quadratically over
    repeated closing tags: since neither block may contain a tag, the think block must end at the
    first </think>, and the answer must run from the <answer> right after it to the final </answer>.
    """
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    think_end = text.find("</think>", len("<think>"))
    if think_end < 0:
        return False
    rest = text[think_end + len("</think>"):].lstrip()
    if not rest.startswith("<answer>") or len(rest) < len("<answer></answer>"):
        return False
    think, answer = text[len("<think>"):think_end], rest[len("<answer>"):-len("</answer>")]
    return not _has_tag(think) and not _has_tag(answer) and bool(answer.strip())


def format_reward(completions: Sequence[Any], **kw: Any) -> list[float]:
    """1.0 iff the completion is exactly <think>…</think><answer>…</answer> (whitespace allowed)."""
    return [float(_format_ok(completion_text(c))) for c in completions]


def avcot_format_reward(completions: Sequence[Any], **kw: Any) -> list[float]:
    """1.0 iff the completion is a whole AV-CoT trace: visual cues, acoustic analysis, disambiguation reasoning
    and a transcription, each non-empty (the CAVSR counterpart of `format_reward`, for transcription GRPO)."""
    def whole(completion: Any) -> bool:
        trace = parse_avcot(completion_text(completion))
        return trace is not None and all(part.strip() for part in (trace.visual_cues, trace.acoustic_pinyin,
                                                                    trace.reasoning))

    return [float(whole(c)) for c in completions]


def accuracy_reward(completions: Sequence[Any], answers: Sequence[str] | None = None, **kw: Any) -> list[float]:
    """1.0 iff the letter in the <answer> tag equals the gold letter."""
    if answers is None:
        raise ValueError("accuracy_reward: no answers (gold option letters) given; it scores MCQ batches only")
    _check_lengths("accuracy_reward", completions, answers, "answers")
    return [float(parse_answer(completion_text(c)) == str(gold).strip().upper())
            for c, gold in zip(completions, answers)]


def _squeeze(text: str) -> str:
    """Whitespace runs as one space: the same tokens for ``tokenize_zh``, in one C-speed pass."""
    return " ".join(text.split())


def _cer_score(completion: Any, reference: str) -> float:
    """max(0, 1 - CER) of one completion's transcription; 0.0 past MAX_SCORED_CHARS."""
    hypothesis = _squeeze(extract_transcription(completion_text(completion)))
    if len(hypothesis) > MAX_SCORED_CHARS:
        return 0.0
    return max(0.0, 1.0 - cer(reference, hypothesis).cer)


def cer_reward(completions: Sequence[Any], references: Sequence[str], **kw: Any) -> list[float]:
    """max(0, 1 - CER) of the extracted transcription against the reference transcript."""
    _check_lengths("cer_reward", completions, references, "references")
    for k, ref in enumerate(references):
        if not isinstance(ref, str):
            raise TypeError(f"cer_reward: references[{k}] is {type(ref).__name__}, expected str")
    return [_cer_score(c, ref) for c, ref in zip(completions, references)]


def count_words(text: str) -> int:
    """Words for length purposes: each CJK character and each Latin word/number counts one; tags don't.

    Non-str input counts 0 words.
    """
    return len(tokenize_zh(_words_text(text))) if isinstance(text, str) else 0


def _words_text(text: str) -> str:
    """The text whose tokens count as words: tags replaced by spaces, whitespace runs squeezed."""
    for tag in _TAGS:
        text = text.replace(tag, " ")
    return _squeeze(text)


def length_reward(completions: Sequence[Any], min_words: int = 16, max_words: int = 512,
                  sigma: float = 64.0, **kw: Any) -> list[float]:
    """1.0 inside [min_words, max_words], exp(-(d/sigma)^2/2) at distance d words outside it."""
    if not 0 <= min_words <= max_words or sigma <= 0:
        raise ValueError(f"length_reward: need 0 <= min_words <= max_words and sigma > 0, got "
                         f"{min_words}, {max_words}, {sigma}")
    out = []
    for c in completions:
        text = _words_text(completion_text(c))
        if len(text) > MAX_SCORED_CHARS:
            out.append(0.0)
            continue
        n = len(tokenize_zh(text))
        d = max(min_words - n, n - max_words, 0)
        out.append(math.exp(-0.5 * (d / sigma) ** 2))
    return out


def resolve_reward(dotted: str) -> RewardFunc:
    """Import a reward function from its dotted path ('package.module.function'); ValueError saying why not."""
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise ValueError(f"reward {dotted!r} must be a dotted path like 'avcot.rewards.format_reward'")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import reward {dotted!r}: {e}") from e
    if not callable(func):
        raise ValueError(f"reward {dotted!r} is not callable")
    return func


def reward_name(func: RewardFunc) -> str:
    """Name for logging: the function's __name__ (through functools.partial)."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def combine_rewards(funcs_with_weights: Sequence[tuple[RewardFunc, float]], completions: Sequence[Any],
                    inputs: RewardInputs | None = None) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted sum of several rewards, plus each one's raw values (keyed by name, '_2' on repeats).

    Each reward is called as ``func(completions, **inputs.kwargs())`` (no keywords without `inputs`).
    """
    if inputs is not None and len(inputs) != len(completions):
        raise ValueError(f"{len(completions)} completions but reward inputs for {len(inputs)}")
    kw = inputs.kwargs() if inputs is not None else {}
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


def format_valid_rate(completions: Sequence[Any], per_func: Mapping[str, Sequence[float]]) -> float:
    """Share of `completions` in the run's answer format: full marks on its first reward named '*format*'
    (`combine_rewards`' per-reward values; e.g. the AV-CoT trace of transcription GRPO), or the
    <think>/<answer> format of `format_reward` when the run scores no format."""
    values = next((v for name, v in per_func.items() if "format" in name), None)
    if values is None:
        values = format_reward(completions)
    return sum(v >= 1.0 for v in values) / max(len(values), 1)
