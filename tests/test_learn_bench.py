"""Pure helpers of the CAVSR learning benchmark (the benchmark itself is a script, not a test)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("learn_cavsr", Path(__file__).parents[1] / "bench" / "learn_cavsr.py")
learn = importlib.util.module_from_spec(SPEC)
sys.modules["learn_cavsr"] = learn  # dataclasses look their module up here
SPEC.loader.exec_module(learn)


def _row(sid, target, competitor, cue):
    return {"sentence_id": sid, "target": target, "competitor": competitor, "cue": cue}


def test_instance_test_rows_need_both_words_of_their_context_in_training():
    train = [_row("p1-s0", "公式", "公示", "subtitle"), _row("p1-s0", "公示", "公式", "subtitle"),
             _row("p1-s0", "公式", "公示", "scene"), _row("p2-s1", "权利", "权力", "background")]
    test = [_row("p1-s0", "公式", "公示", "subtitle"),  # both words trained in this context: kept
            _row("p1-s0", "公式", "公示", "scene"),  # only one word trained with the scene cue: dropped
            _row("p2-s1", "权力", "权利", "background")]  # competitor trained, target not: dropped
    assert learn.both_words_trained(train, test) == [test[0]]
