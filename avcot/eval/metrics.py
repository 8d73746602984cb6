"""Scoring of generated outputs: per-sample rows and their aggregates (pure functions, no model).

CAVSR: the transcription is extracted from the output with `avcot.traces.extract_transcription`
(the AV-CoT `Transcription:` section, else the last non-empty line, so a plain-transcript adapter is
scored the same way); CER is `avcot.text.cer` under the chosen scoring: "avcot" (Mandarin-normalised
tokens, t2s optional) or "wenet" (wenet compute-cer.py --char=1 tokens). Corpus CER = total S+D+I
over total reference tokens of the rows whose reference has tokens, per ablation and per cue; rows
with an empty reference (no tokens under the scoring) have no rate to contribute, so they are counted
apart (`CerSummary.empty_refs`, with their insertions in `empty_ref_insertions`), never hidden in the
numerator. wenet's own script adds those insertions to its numerator: (S+D+I + empty_ref_insertions)
/ ref tokens reproduces its "Overall" figure.

MCQ: the letter comes from `avcot.traces.parse_answer` (last <answer> tag), format validity from
`avcot.rewards.format_reward` (exactly <think>…</think><answer>…</answer>); accuracy overall, per
modality condition (a | v | av) and per difficulty (easy | medium | hard | unknown).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from avcot.phonetics import ambiguous_spans
from avcot.rewards import format_reward
from avcot.text import Scoring, cer
from avcot.traces import extract_transcription, parse_answer

ABLATIONS = ("true", "black", "random", "audio_only")
"""Video conditions of the CAVSR eval: true video, black frames, another clip's video, no video."""
MODALITIES = ("a", "v", "av")
DIFFICULTIES = ("easy", "medium", "hard", "unknown")


@dataclass(frozen=True)
class CavsrPrediction:
    """One clip under one ablation: raw output, extracted hypothesis and its edit counts."""

    id: str
    ablation: str
    reference: str
    output: str
    hypothesis: str
    substitutions: int
    deletions: int
    insertions: int
    ref_len: int
    cue: str = ""
    homophone_errors: int = 0
    """Spans where hypothesis and reference differ in characters but share toneless pinyin."""
    scoring: Scoring = "avcot"
    """Tokenisation the counts were made with (`avcot.text.Scoring`)."""

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def cer(self) -> float:
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.ref_len


@dataclass(frozen=True)
class CerSummary:
    """Corpus CER of one group of predictions (an ablation, or a cue within an ablation)."""

    name: str
    n: int
    """All rows of the group, empty references included."""
    cer: float | None
    """(S + D + I) / ref_len over rows with a non-empty reference; None when there is no such row."""
    substitutions: int
    deletions: int
    insertions: int
    """S, D, I of the rows with a non-empty reference."""
    ref_len: int
    homophone_errors: int = 0
    empty_refs: int = 0
    """Rows whose reference has no tokens: left out of `cer`, counted here."""
    empty_ref_insertions: int = 0
    """Tokens hypothesised for those rows (all insertions)."""


@dataclass(frozen=True)
class McqPrediction:
    """One MCQ item under one modality condition."""

    id: str
    modality: str
    """Condition it was asked under: a (audio only), v (video only), av (both)."""
    answer: str
    output: str
    predicted: str
    """Parsed letter, '' when none parsed."""
    format_ok: bool
    difficulty: str = "unknown"

    @property
    def correct(self) -> bool:
        return self.predicted == self.answer


@dataclass(frozen=True)
class Accuracy:
    """Accuracy of one group of MCQ predictions."""

    name: str
    n: int
    correct: int
    format_valid: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def format_valid_rate(self) -> float:
        return self.format_valid / self.n if self.n else 0.0


@dataclass(frozen=True)
class McqSummary:
    """MCQ aggregates: overall, by modality condition, by difficulty."""

    overall: Accuracy
    by_modality: tuple[Accuracy, ...]
    by_difficulty: tuple[Accuracy, ...]


def score_cavsr(id: str, ablation: str, reference: str, output: str, *, cue: str = "",
                t2s: bool = False, scoring: Scoring = "avcot") -> CavsrPrediction:
    """Extract the transcription from `output` and score it against `reference` under `scoring`."""
    hypothesis = extract_transcription(output)
    res = cer(reference, hypothesis, t2s=t2s, scoring=scoring)
    return CavsrPrediction(
        id=id, ablation=ablation, reference=reference, output=output, hypothesis=hypothesis,
        substitutions=res.substitutions, deletions=res.deletions, insertions=res.insertions,
        ref_len=res.ref_len, cue=cue, homophone_errors=len(ambiguous_spans(reference, hypothesis)),
        scoring=scoring,
    )


def summarize_cer(name: str, preds: Sequence[CavsrPrediction]) -> CerSummary:
    """Corpus CER of `preds`: total edits over total reference tokens, empty references apart (module doc)."""
    scored = [p for p in preds if p.ref_len > 0]
    empty = [p for p in preds if p.ref_len == 0]
    ref_len = sum(p.ref_len for p in scored)
    errors = sum(p.errors for p in scored)
    return CerSummary(name=name, n=len(preds), cer=errors / ref_len if ref_len else None,
                      substitutions=sum(p.substitutions for p in scored), deletions=sum(p.deletions for p in scored),
                      insertions=sum(p.insertions for p in scored), ref_len=ref_len,
                      homophone_errors=sum(p.homophone_errors for p in preds), empty_refs=len(empty),
                      empty_ref_insertions=sum(p.insertions for p in empty))


def _groups(items: Iterable, key: Callable, order: Sequence[str] = ()) -> dict[str, list]:
    """Group items by key, known names first in `order`, then the rest sorted."""
    out: dict[str, list] = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    ranked = [k for k in order if k in out] + sorted(k for k in out if k not in order)
    return {k: out[k] for k in ranked}


def cer_by_ablation(preds: Sequence[CavsrPrediction]) -> tuple[CerSummary, ...]:
    """One corpus-CER summary per ablation, in ABLATIONS order."""
    return tuple(summarize_cer(k, v) for k, v in _groups(preds, lambda p: p.ablation, ABLATIONS).items())


def cer_by_cue(preds: Sequence[CavsrPrediction]) -> tuple[CerSummary, ...]:
    """One summary per (ablation, cue), named 'ablation/cue'; rows without a cue count as 'none'."""
    return tuple(summarize_cer(k, v) for k, v in _groups(preds, lambda p: f"{p.ablation}/{p.cue or 'none'}").items())


def score_mcq(id: str, modality: str, answer: str, output: str, *, difficulty: str | None = None) -> McqPrediction:
    """Parse the letter and check the format of one MCQ output."""
    return McqPrediction(id=id, modality=modality, answer=answer.strip().upper(), output=output,
                         predicted=parse_answer(output) or "", format_ok=format_reward([output])[0] == 1.0,
                         difficulty=difficulty or "unknown")


def _accuracy(name: str, preds: Sequence[McqPrediction]) -> Accuracy:
    return Accuracy(name=name, n=len(preds), correct=sum(p.correct for p in preds),
                    format_valid=sum(p.format_ok for p in preds))


def summarize_mcq(preds: Sequence[McqPrediction]) -> McqSummary:
    """Accuracy and format-valid rate overall, per modality condition and per difficulty."""
    return McqSummary(
        overall=_accuracy("overall", preds),
        by_modality=tuple(_accuracy(k, v) for k, v in _groups(preds, lambda p: p.modality, MODALITIES).items()),
        by_difficulty=tuple(_accuracy(k, v) for k, v in
                            _groups(preds, lambda p: p.difficulty, DIFFICULTIES).items()),
    )
