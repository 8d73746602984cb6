"""Write GRPO's sample completions through the run's loggers, whatever they are.

TensorBoard: a Markdown table under the text tag `samples` at the step. CSV: lines appended to
`samples.jsonl` beside `metrics.csv` ({step, prompt_id, completion, reward}). Any other logger (or none) is
passed over; a logger that fails to take the samples is reported once as a warning and never fails training.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from avcot.completion_samples import CompletionSample, markdown_table

log = logging.getLogger(__name__)
_warned: set[str] = set()  # logger classes already reported, so a failing logger warns once, not every N steps


def write_samples(loggers: Iterable, samples: Sequence[CompletionSample], step: int) -> list[str]:
    """Give `samples` to every logger that can show them; the names of the loggers that took them."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    took = []
    for logger in loggers:
        try:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("samples", markdown_table(samples), global_step=step)
            elif isinstance(logger, CSVLogger):
                append_jsonl(Path(logger.log_dir) / "samples.jsonl", samples)
            else:
                continue
        except Exception as e:  # noqa: BLE001 - samples are for reading; a logger's failure must not stop training
            if type(logger).__name__ not in _warned:
                _warned.add(type(logger).__name__)
                log.warning("could not write sample completions to %s: %s", type(logger).__name__, e)
            continue
        took.append(type(logger).__name__)
    return took


def append_jsonl(path: Path, samples: Sequence[CompletionSample]) -> None:
    """Append one JSON line per sample (the folder is made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.as_json(), ensure_ascii=False) + "\n")
