"""Sample completions of a GRPO step as readable records: which prompt, what the policy wrote, what it scored.

`lit_modules.sample_log` writes them through the run's loggers every `log_samples_every_n_steps` steps.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CompletionSample:
    """One sampled completion and its total (weighted) reward."""

    step: int
    prompt_id: str
    completion: str
    reward: float

    def as_json(self) -> dict:
        return asdict(self)


def samples_due(step: int, updates: int, every: int) -> bool:
    """Whether a training step that made `updates` optimizer updates and left the count at `step` logs its
    samples: its first step, then whenever the count reaches or passes a multiple of `every` (0 = never)."""
    if every <= 0:
        return False
    before = step - updates
    return before == 0 or before // every != step // every


def completion_samples(step: int, prompt_ids: Sequence[str], completions: Sequence[str], rewards: Sequence[float],
                       group_size: int) -> list[CompletionSample]:
    """Every completion of a step with its prompt's id (the G completions of a prompt are adjacent)."""
    if len(completions) != len(prompt_ids) * group_size or len(rewards) != len(completions):
        raise ValueError(f"{len(prompt_ids)} prompts x {group_size} completions, but {len(completions)} "
                         f"completions and {len(rewards)} rewards")
    return [CompletionSample(step, prompt_ids[k // group_size], text, float(r))
            for k, (text, r) in enumerate(zip(completions, rewards))]


def markdown_table(samples: Sequence[CompletionSample]) -> str:
    """The samples as a Markdown table (TensorBoard's text plugin renders it); cells escaped for pipes and
    line breaks, so a completion stays in its cell."""
    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")

    lines = ["| prompt id | reward | completion |", "|---|---|---|"]
    lines += [f"| {cell(s.prompt_id)} | {s.reward:.4f} | {cell(s.completion)} |" for s in samples]
    return "\n".join(lines)
