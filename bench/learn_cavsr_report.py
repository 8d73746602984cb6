"""The CAVSR learning benchmark's scoring and report (bench/learn_cavsr.py): what each hypothesis got right, the
rates per condition and cue, summary.md and the verdict on the chain of thought."""
from __future__ import annotations

from bench.learn_cavsr_grpo import curve_line, grpo_run, grpo_targets_of, grpo_verdict
from bench.learn_read import READ_CUES  # the cues whose word is read from on-screen text

VISUAL_CUES = ("background", "subtitle", "scene")


def outcome(hypothesis: str, row: dict) -> dict[str, bool]:
    """What one hypothesis got right: the spoken word, the competitor, the sentence frame, all of it.

    `frame` is the carrier sentence with the homophone slot blanked (so it checks the audio side:
    the template is decided by what is said, the word by what is shown).
    """
    def blank(text: str) -> str:
        return text.replace(row["target"], "{w}").replace(row["competitor"], "{w}")

    return {"word": row["target"] in hypothesis, "competitor": row["competitor"] in hypothesis,
            "frame": blank(hypothesis) == blank(row["text"]), "exact": hypothesis == row["text"]}


def word_named(text: str, row: dict) -> str:
    """Which of the row's two words `text` names: 'target', 'competitor', or 'neither' (none or both)."""
    has_t, has_c = row["target"] in text, row["competitor"] in text
    return "target" if has_t and not has_c else "competitor" if has_c and not has_t else "neither"


def perception(preds, rows: list[dict]) -> dict[str, int] | None:
    """True-video AV-CoT outputs on sign and subtitle clips (whose Visual Cues line quotes the on-screen text): n,
    how often that line names the spoken word (`read`), and how often the transcription names the same word as
    that line (`agree`). None when no such output has a Visual Cues section (a plain-transcript model). Tells a
    wrong reading from a right reading lost later."""
    from avcot.traces import parse_avcot

    by_id, n, read, agree = {r["id"]: r for r in rows}, 0, 0, 0
    for p in preds:
        row = by_id[p.id]
        trace = parse_avcot(p.output) if p.ablation == "true" and row["cue"] in READ_CUES else None
        if trace is None or not trace.visual_cues.strip():
            continue
        seen = word_named(trace.visual_cues, row)
        n, read = n + 1, read + (seen == "target")
        agree += seen != "neither" and word_named(p.hypothesis, row) == seen
    return {"n": n, "read": read, "agree": agree} if n else None


def perception_line(target: str, counts: dict[str, int]) -> str:
    """The `perception` counts of one run as a sentence for summary.md."""
    return (f"{target}, true video, sign and subtitle clips: the Visual Cues line names the spoken word in "
            f"{counts['read']} of {counts['n']}, and the transcription names the word that line names in "
            f"{counts['agree']} (when they agree, a wrong homophone is a wrong reading, not a right reading lost in "
            "the reasoning).")


def breakdown(preds, rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """condition -> cue ('all' too) -> rate of each `outcome` field (and n)."""
    by_id = {r["id"]: r for r in rows}
    tallies: dict[str, dict[str, list[dict[str, bool]]]] = {}
    for p in preds:
        row = by_id[p.id]
        hit = outcome(p.hypothesis, row)
        for cue in ("all", row["cue"]):
            tallies.setdefault(p.ablation, {}).setdefault(cue, []).append(hit)
    return {cond: {cue: {"n": len(hits), **{k: round(sum(h[k] for h in hits) / len(hits), 3) for k in hits[0]}}
                   for cue, hits in sorted(per_cue.items())} for cond, per_cue in tallies.items()}


def summary_table(summary: dict) -> str:
    """results.json as markdown: a row per (target, condition) with CER and outcome rates, per-cue word
    accuracy, then the verdict on the chain of thought."""
    first = next(iter(summary["runs"].values()))
    cues = [c for c in VISUAL_CUES if c in first["outcomes"].get("true", {})]
    lines = [f"# Learning benchmark: {summary['date']}", "", f"Command: `{summary['command']}`  ",
             f"Machine: {summary['machine']}; {summary['clips_train']} training / {summary['clips_test']} test "
             f"clips; total {summary['total_seconds']} s (training: " + ", ".join(
                 f"{t} {r['train_seconds']} s" for t, r in summary["runs"].items()) + ")." + read_line(summary), "",
             "| target | condition | corpus CER | word acc | competitor | frame right | " + " / ".join(cues) + " |",
             "|---|---|---|---|---|---|---|"]
    for target, run in summary["runs"].items():
        for cond, cer in run["cer"].items():
            o = run["outcomes"][cond]
            per_cue = " / ".join(f"{o[c]['word']:.2f}" for c in cues if c in o)
            lines.append(f"| {target} | {cond} | {cer:.3f} | {o['all']['word']:.2f} | {o['all']['competitor']:.2f} | "
                         f"{o['all']['frame']:.2f} | {per_cue} |")
    extra = [line for t in grpo_targets_of(summary["runs"]) for line in (
        "", curve_line(summary["runs"][grpo_run(t)]["reward_curve"], t), "", grpo_verdict(summary["runs"], t))]
    seen = [perception_line(t, r["perception"]) for t, r in summary["runs"].items() if r.get("perception")]
    return "\n".join(lines + ["", cot_verdict(summary["runs"]), *extra, *(["", *seen] if seen else [])]) + "\n"


def read_line(summary: dict) -> str:
    """' Reading pre-training: ...' when the run had one (--read-steps or --read-plan: one clause a stage), else ''.
    An earlier results.json holds its one stage as a dict, not a list."""
    read = summary.get("read")
    if not read:
        return ""
    stages = [read] if isinstance(read, dict) else read
    return (" Reading pre-training (bench/learn_read.py; reading check = forced choice on fresh renderings, 0.5 = "
            "chance): " + "; then ".join(
                f"{r['steps']} steps" + (f" at lr {r['lr']:g}" if "lr" in r else "")
                + (f", {r['subtitle_share']:g} subtitles" if r.get("subtitle_share") else "")
                + f", {r['train_seconds']} s, last loss {r['final_loss']:.3f}, reading check "
                + ", ".join(f"{cue} {acc:.2f}" for cue, acc in r["reading_check"].items()) for r in stages)
            + "; the SFT runs start from it.")


def cot_verdict(runs: dict) -> str:
    """One sentence: does training on the AV-CoT trace beat the plain transcript here (true-video CER and word
    accuracy, and how much each model gains from the true over a random video)?"""
    if not {"avcot", "transcript"} <= set(runs):
        return "Only one target trained: run with --target both to compare AV-CoT with the plain transcript."

    def stats(t: str) -> tuple[float, float, float]:
        cer, word = runs[t]["cer"], runs[t]["outcomes"]["true"]["all"]["word"]
        return cer["true"], word, cer.get("random", float("nan")) - cer["true"]

    (cer_a, word_a, gain_a), (cer_t, word_t, gain_t) = stats("avcot"), stats("transcript")
    helps = cer_a < cer_t and word_a >= word_t
    hurts = cer_a > cer_t and word_a <= word_t
    verdict = "helps here" if helps else "hurts here" if hurts else "is mixed here"
    return (f"AV-CoT vs w/o AV-CoT (true video): CER {cer_a:.3f} vs {cer_t:.3f}, word accuracy {word_a:.2f} vs "
            f"{word_t:.2f}; video gain (random minus true CER) {gain_a:+.3f} vs {gain_t:+.3f}. "
            f"The chain of thought {verdict}.")
