"""docs/eval.md states the eval media defaults the code uses (flag > training_settings.json > default)."""
from __future__ import annotations

import re
from pathlib import Path

from avcot.eval.__main__ import CAVSR_DEFAULTS, MCQ_DEFAULTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "eval.md"
ROW = re.compile(r"^\| `--([a-z-]+)` \| as trained, else (\S+) \| as trained, else (\S+) \|$", re.MULTILINE)


def _value(text: str) -> object:
    return {"off": False, "on": True}.get(text, float(text) if text.replace(".", "", 1).isdigit() else text)


def test_the_media_defaults_table_matches_the_code() -> None:
    rows = {flag.replace("-", "_"): (_value(cavsr), _value(mcq)) for flag, cavsr, mcq in ROW.findall(DOC.read_text())}
    media = set(MCQ_DEFAULTS)  # the media settings both commands share
    assert set(rows) == media
    for key, (cavsr, mcq) in rows.items():
        assert (cavsr, mcq) == (CAVSR_DEFAULTS[key], MCQ_DEFAULTS[key]), key
    assert "training_settings.json" in DOC.read_text()
