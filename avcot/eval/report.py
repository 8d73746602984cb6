"""Eval outputs: metrics.json, predictions.jsonl, PNG plots (matplotlib, Agg) and report.md.

The worst-samples table aligns reference and hypothesis token by token (`avcot.text.align`): errors
are shown in [brackets] with ∅ for a missing token, and tokens inside a homophone span
(`avcot.phonetics.ambiguous_spans`: different characters, same toneless pinyin) are in **bold**, so
the errors the visual context should have fixed stand out. Every report states the CER scoring, how
many rows each condition read, scored and rejected (and why), and which clips were cut at max_seconds.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from avcot.eval.accounting import ConditionCounts, TruncatedClip
from avcot.eval.metrics import Accuracy, CavsrPrediction, CerSummary, McqPrediction, McqSummary
from avcot.phonetics import ambiguous_spans
from avcot.text import Scoring, align, normalize_zh

GAP = "∅"
SCORING_NOTES = {
    "avcot": "avcot: NFKC width/case folding, all punctuation and symbols dropped, one token per CJK "
             "character and per Latin word / number (`avcot.text.tokenize_zh`)",
    "wenet": "wenet: tokens of wenet's tools/compute-cer.py --char=1 (its 17 punctuation marks dropped, "
             "other marks kept as tokens, no width folding, Latin words and numbers split into characters)",
}
EMPTY_REF_RULE = ("Corpus CER = (S + D + I) / reference tokens over rows with a non-empty reference; rows whose "
                  "reference has no tokens are left out of it and counted under 'empty refs' with their "
                  "insertions in brackets.")
TRUNCATED_LISTED = 20


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by one report."""

    report: Path
    metrics: Path
    predictions: Path
    plots: tuple[Path, ...]


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def bar_chart(path: Path, names: Sequence[str], values: Sequence[float], *, title: str, ylabel: str,
              counts: Sequence[int] | None = None, ylim: tuple[float, float] | None = None) -> Path:
    """One bar per name with its value printed on top (and n= under the label when counts are given)."""
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 1.5), 3.5), dpi=100)
    labels = [f"{n}\n(n={c})" for n, c in zip(names, counts)] if counts else list(names)
    known = [0.0 if v != v else v for v in values]  # NaN = no value (e.g. no reference tokens): no bar, "n/a"
    bars = ax.bar(range(len(values)), known, color="#4C72B0")
    ax.set_xticks(range(len(values)), labels)
    for bar, v in zip(bars, values):
        ax.annotate("n/a" if v != v else f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _token_offsets(norm: str, tokens: Sequence[str]) -> list[int]:
    """Start offset of each token inside the normalised string (tokens appear in order)."""
    out, cursor = [], 0
    for tok in tokens:
        pos = norm.find(tok, cursor) if tok else -1
        out.append(pos)
        if pos >= 0:
            cursor = pos + len(tok)
    return out


def aligned_pair(reference: str, hypothesis: str, *, scoring: Scoring = "avcot") -> tuple[str, str]:
    """Reference and hypothesis lines aligned token by token, errors bracketed, homophone spans bold.

    Homophone spans are found on the avcot-normalised text; under "wenet" scoring a token that does not
    occur there as such (upper-cased Latin, kept punctuation) is simply never bold.
    """
    rows = align(reference, hypothesis, scoring=scoring)
    spans = ambiguous_spans(reference, hypothesis)
    ref_off = _token_offsets(normalize_zh(reference), [r for r, _, _ in rows])
    hyp_off = _token_offsets(normalize_zh(hypothesis), [h for _, h, _ in rows])
    ref_line, hyp_line = [], []
    for (r, h, op), ro, ho in zip(rows, ref_off, hyp_off):
        homophone = any(s.start_a <= ro < s.end_a for s in spans if ro >= 0) or \
            any(s.start_b <= ho < s.end_b for s in spans if ho >= 0)
        cells = [r or GAP, h or GAP]
        if op != "equal":
            cells = [f"[{c}]" for c in cells]
        if homophone:
            cells = [f"**{c}**" for c in cells]
        ref_line.append(cells[0])
        hyp_line.append(cells[1])
    return " ".join(ref_line), " ".join(hyp_line)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def worst_table(preds: Sequence[CavsrPrediction], k: int = 10) -> str:
    """Markdown table of the k highest-CER predictions (ties: more errors first, then id)."""
    worst = sorted(preds, key=lambda p: (-p.cer, -p.errors, p.id))[:k]
    lines = ["| id | ablation | CER | S/D/I | reference (aligned) | hypothesis (aligned) |",
             "|---|---|---|---|---|---|"]
    for p in worst:
        ref, hyp = aligned_pair(p.reference, p.hypothesis, scoring=p.scoring)
        lines.append(f"| {_md_escape(p.id)} | {p.ablation} | {p.cer:.3f} | {p.substitutions}/{p.deletions}/"
                     f"{p.insertions} | {_md_escape(ref)} | {_md_escape(hyp)} |")
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def cer_table(summaries: Sequence[CerSummary]) -> str:
    """Markdown table of corpus CER summaries."""
    lines = ["| condition | n | CER | S | D | I | ref tokens | homophone errors | empty refs (I) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.name} | {s.n} | {_rate(s.cer)} | {s.substitutions} | {s.deletions} | {s.insertions} | "
                     f"{s.ref_len} | {s.homophone_errors} | {s.empty_refs} ({s.empty_ref_insertions}) |")
    return "\n".join(lines)


def rows_table(counts: Sequence[ConditionCounts]) -> str:
    """Markdown table: rows in / scored / rejected (/ unaccounted) per condition."""
    lines = ["| condition | rows in | scored | rejected | unaccounted |", "|---|---|---|---|---|"]
    for c in counts:
        lines.append(f"| {c.condition} | {c.rows_in} | {c.scored} | {c.rejected} | {c.unaccounted} |")
    return "\n".join(lines)


def reasons_table(counts: Sequence[ConditionCounts]) -> str:
    """Markdown table of reject reasons (kinds, particulars masked) per condition; '' when nothing was rejected."""
    rows = [(c.condition, kind, n) for c in counts for kind, n in c.reasons]
    if not rows:
        return ""
    lines = ["| condition | reason | rows |", "|---|---|---|"]
    lines += [f"| {cond} | {_md_escape(kind)} | {n} |" for cond, kind, n in rows]
    return "\n".join(lines)


def accounting_section(counts: Sequence[ConditionCounts], truncated: Sequence[TruncatedClip]) -> list[str]:
    """report.md lines: rows per condition, reject reasons, clips cut at max_seconds."""
    lines = ["## Rows per condition", "", rows_table(counts), ""]
    reasons = reasons_table(counts)
    lines += ["Reject reasons (details per row in `rejects.jsonl`):", "", reasons, ""] if reasons else \
        ["No row was rejected.", ""]
    lines += ["## Truncated media", "", f"{len(truncated)} clips truncated (media longer than max_seconds; only the "
              "start was used).", ""]
    if truncated:
        lines += ["| id | stream | file | length (s) | used (s) |", "|---|---|---|---|---|"]
        lines += [f"| {_md_escape(t.id)} | {n.stream} | {_md_escape(n.path)} | {n.source_s:.1f} | {n.used_s:.1f} |"
                  for t in truncated[:TRUNCATED_LISTED] for n in t.notes]
        if len(truncated) > TRUNCATED_LISTED:
            lines.append(f"\n… and {len(truncated) - TRUNCATED_LISTED} more clips (all in metrics.json).")
        lines.append("")
    return lines


def _accounting_json(counts: Sequence[ConditionCounts], truncated: Sequence[TruncatedClip]) -> dict:
    return {"rows": [dict(asdict(c), reasons=dict(c.reasons), unaccounted=c.unaccounted) for c in counts],
            "truncated_clips": len(truncated), "truncated": [asdict(t) for t in truncated]}


def accuracy_table(rows: Sequence[Accuracy]) -> str:
    """Markdown table of MCQ accuracy buckets."""
    lines = ["| group | n | accuracy | format-valid |", "|---|---|---|---|"]
    for a in rows:
        lines.append(f"| {a.name} | {a.n} | {a.accuracy:.4f} | {a.format_valid_rate:.4f} |")
    return "\n".join(lines)


def _accuracy_json(a: Accuracy) -> dict:
    return {"name": a.name, "n": a.n, "correct": a.correct, "accuracy": a.accuracy,
            "format_valid": a.format_valid, "format_valid_rate": a.format_valid_rate}


def write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    """One JSON object per line, UTF-8 kept readable."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _header(title: str, run: dict) -> list[str]:
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in run.items()]
    return lines + [""]


def write_cavsr_report(out_dir: str | Path, preds: Sequence[CavsrPrediction], by_ablation: Sequence[CerSummary],
                       by_cue: Sequence[CerSummary], run: dict, *, worst_k: int = 10, scoring: Scoring = "avcot",
                       counts: Sequence[ConditionCounts] = (),
                       truncated: Sequence[TruncatedClip] = ()) -> ReportFiles:
    """metrics.json, predictions.jsonl, cer_by_ablation.png and report.md for a CAVSR eval."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions = write_jsonl(out / "predictions.jsonl",
                              [dict(asdict(p), cer=p.cer) for p in preds])
    metrics = out / "metrics.json"
    metrics.write_text(json.dumps({"task": "cavsr", "run": run, "scoring": scoring, "empty_reference_rule":
                                   EMPTY_REF_RULE, "cer_by_ablation": [asdict(s) for s in by_ablation],
                                   "cer_by_cue": [asdict(s) for s in by_cue], **_accounting_json(counts, truncated)},
                                  ensure_ascii=False, indent=2), encoding="utf-8")
    plot = bar_chart(out / "cer_by_ablation.png", [s.name for s in by_ablation],
                     [float("nan") if s.cer is None else s.cer for s in by_ablation],
                     title="Corpus CER per video condition (lower is better)", ylabel="CER",
                     counts=[s.n for s in by_ablation])
    main = [p for p in preds if p.ablation == (by_ablation[0].name if by_ablation else "true")]
    lines = _header("CAVSR evaluation", run)
    lines += ["## CER per video condition", "", f"Scoring: {SCORING_NOTES[scoring]}.", "", EMPTY_REF_RULE, "",
              cer_table(by_ablation), "", f"![CER per condition]({plot.name})", "",
              "## CER per condition and cue", "", cer_table(by_cue), ""]
    lines += accounting_section(counts, truncated)
    lines += [f"## Worst {worst_k} samples ({main[0].ablation if main else 'n/a'})", "",
              "Errors in [brackets], ∅ = missing token, **bold** = homophone span (same pinyin, other characters).",
              "", worst_table(main, worst_k), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return ReportFiles(report, metrics, predictions, (plot,))


def write_mcq_report(out_dir: str | Path, preds: Sequence[McqPrediction], summary: McqSummary, run: dict, *,
                     counts: Sequence[ConditionCounts] = (), truncated: Sequence[TruncatedClip] = ()) -> ReportFiles:
    """metrics.json, predictions.jsonl, accuracy plots and report.md for an MCQ eval."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions = write_jsonl(out / "predictions.jsonl",
                              [dict(asdict(p), correct=p.correct) for p in preds])
    metrics = out / "metrics.json"
    metrics.write_text(json.dumps({
        "task": "mcq", "run": run, "overall": _accuracy_json(summary.overall),
        "by_modality": [_accuracy_json(a) for a in summary.by_modality],
        "by_difficulty": [_accuracy_json(a) for a in summary.by_difficulty], **_accounting_json(counts, truncated),
    }, ensure_ascii=False, indent=2), encoding="utf-8")
    plots = (
        bar_chart(out / "accuracy_by_modality.png", [a.name for a in summary.by_modality],
                  [a.accuracy for a in summary.by_modality], title="Accuracy per modality condition",
                  ylabel="accuracy", counts=[a.n for a in summary.by_modality], ylim=(0.0, 1.05)),
        bar_chart(out / "accuracy_by_difficulty.png", [a.name for a in summary.by_difficulty],
                  [a.accuracy for a in summary.by_difficulty], title="Accuracy per difficulty",
                  ylabel="accuracy", counts=[a.n for a in summary.by_difficulty], ylim=(0.0, 1.05)),
    )
    lines = _header("MCQ evaluation", run)
    lines += ["## Overall", "", accuracy_table([summary.overall]), "",
              "## Per modality condition", "", accuracy_table(summary.by_modality), "", f"![modality]({plots[0].name})",
              "", "## Per difficulty", "", accuracy_table(summary.by_difficulty), "", f"![difficulty]({plots[1].name})",
              ""] + accounting_section(counts, truncated)
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return ReportFiles(report, metrics, predictions, plots)
