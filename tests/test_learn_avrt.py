"""Pure helpers of the AVRT learning benchmark (bench/learn_avrt.py; the benchmark itself is a script)."""
from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

from avcot.eval.metrics import score_mcq
from avcot.records import LETTERS
from avcot.synth_data import PAIRS

SPEC = importlib.util.spec_from_file_location("learn_avrt", Path(__file__).parents[1] / "bench" / "learn_avrt.py")
learn = importlib.util.module_from_spec(SPEC)
sys.modules["learn_avrt"] = learn  # dataclasses look their module up here
SPEC.loader.exec_module(learn)

FOUR = "gongshi,shichang,fayan,yueju"
SIX = "shiyan,qizhong,gongshi,quanli,fayan,yueju"


def _pair_of(word: str) -> str:
    return next(p.key for p in PAIRS if word in p.words)


def test_clip_specs_show_each_sentence_with_its_word_and_with_words_of_other_pairs():
    settings = learn.BenchSettings(out="", pairs=FOUR, mismatches=2, options="shuffled")
    planned = learn.clip_specs(settings, seed=0, renders=2)
    assert len(planned) == 4 * 2 * 2 * 3 * 2  # pairs x templates x words x (1 + mismatches) x renders
    by_sentence: dict[tuple[str, str, str], list[str]] = {}
    for spec, shown in planned:
        assert spec.cue == "scene" and spec.screen_text == next(
            s.sign for p in PAIRS for w, s in zip(p.words, p.scenes) if w == shown)
        by_sentence.setdefault((spec.sentence_id, spec.target, spec.id.rsplit("-", 1)[1]), []).append(shown)
    for (_, said, _), shown in by_sentence.items():
        assert shown[0] == said  # the matched clip
        assert len(set(shown)) == 3 and all(_pair_of(w) != _pair_of(said) for w in shown[1:])
    assert {learn.is_matched(f"{spec.id}-said") for spec, _ in planned} == {True, False}


def test_contents_follow_the_content_seed_and_renderings_the_render_seed():
    settings = learn.BenchSettings(out="", pairs=SIX)
    train, test = learn.clip_specs(settings, 0, 1), learn.clip_specs(settings, 1000, 1)
    assert [(s.text, shown) for s, shown in train] == [(s.text, shown) for s, shown in test]
    assert [s.variation for s, _ in train] != [s.variation for s, _ in test]
    other = learn.clip_specs(learn.BenchSettings(out="", pairs=SIX, seed=5), 0, 1)
    assert [shown for _, shown in other] != [shown for _, shown in train]


def _items(said: str, shown: str, seed: int = 0):
    table = learn.word_table("")
    return learn.clip_items("synth-r0-x-s0-w0-vy0-0", said, shown, ("v.mp4", "a.wav"), table, random.Random(seed))


@pytest.mark.parametrize("seed", range(5))
def test_mismatched_clip_questions_have_the_other_stream_word_as_the_trap(seed):
    said, shown = "公式", "粤剧"
    items = {learn.kind_of(it.id): it for it in _items(said, shown, seed)}
    assert set(items) == {"said", "shown", "both"}
    for kind, right, trap in (("said", said, shown), ("shown", shown, said)):
        it = items[kind]
        assert it.options[LETTERS.index(it.answer)] == right and trap in it.options and len(set(it.options)) == 4
        others = [o for o in it.options if o not in (said, shown)]
        assert len(others) == 2 and all(_pair_of(o) not in (_pair_of(said), _pair_of(shown)) for o in others)
    both = items["both"]
    assert both.options[LETTERS.index(both.answer)] == learn.pair_option(said, shown)
    # Either stream alone leaves two options: the right one and one with that stream's word right.
    assert sum(f"说：{said}；" in o for o in both.options) == 2
    assert sum(o.endswith(f"画面：{shown}") for o in both.options) == 2
    assert [it.modality for it in items.values()] == ["a", "v", "av"]
    assert all((it.video, it.audio) == ("v.mp4", "a.wav") for it in items.values())


@pytest.mark.parametrize("seed", range(5))
def test_slotted_options_put_every_word_at_its_own_letter(seed):
    table = learn.word_table("")
    words = [p.words[w] for p in PAIRS for w in (0, 1)]
    settings = learn.BenchSettings(out="", seed=seed)
    planned = learn.clip_specs(settings, 0, 1)
    rng = random.Random(seed)
    for spec, shown in planned[::7]:
        said = spec.target
        assert shown == said or learn.slot(shown, words) != learn.slot(said, words)  # both fit one list
        items = {learn.kind_of(it.id): it for it in learn.clip_items(spec.id, said, shown, ("v", "a"), table,
                                                                     rng, slotted=True)}
        for kind, right in (("said", said), ("shown", shown)):
            opts = items[kind].options
            assert all(learn.slot(o, words) == i for i, o in enumerate(opts)), opts
            assert items[kind].answer == LETTERS[learn.slot(right, words)] and {said, shown} <= set(opts)
        both = items["both"]
        assert both.answer == LETTERS[(learn.slot(said, words) + learn.slot(shown, words)) % 4]
        assert both.options[LETTERS.index(both.answer)] == learn.pair_option(said, shown)
        assert sum(f"说：{said}；" in o for o in both.options) == 2
        assert sum(o.endswith(f"画面：{shown}") for o in both.options) == 2


def test_six_pairs_fill_every_slot_and_fewer_are_refused_before_rendering():
    table = learn.word_table(SIX)
    words = learn.table_words(table)
    for said in words:
        for shown in words:
            if said == shown or (learn._word_pair(said) != learn._word_pair(shown)
                                 and learn.slot(said, words) != learn.slot(shown, words)):
                items = learn.clip_items("x", said, shown, ("v", "a"), table, random.Random(0), slotted=True)
                assert len(items) == 3
    with pytest.raises(ValueError, match="at least 6 pairs"):
        learn.clip_specs(learn.BenchSettings(out="", pairs=FOUR), 0, 1)
    assert learn.clip_specs(learn.BenchSettings(out="", pairs=FOUR, options="shuffled"), 0, 1)


def test_slotted_options_refuse_two_words_of_one_slot():
    table = learn.word_table("")
    with pytest.raises(ValueError, match="share a letter slot"):
        learn.clip_items("x", "实验", "公式", ("v", "a"), table, random.Random(0), slotted=True)  # both slot 0


def test_matched_clip_questions_never_offer_a_homophone():
    items = {learn.kind_of(it.id): it for it in _items("公式", "公式")}
    for kind in ("said", "shown"):
        opts = items[kind].options
        assert opts[LETTERS.index(items[kind].answer)] == "公式" and "公示" not in opts and len(set(opts)) == 4


def test_ids_parse_back_and_bad_ones_are_named():
    assert learn.kind_of("synth-r0-gongshi-s0-w1-vgongshi1-0-both") == "both"
    assert learn.is_matched("synth-r0-gongshi-s0-w1-vgongshi1-0-both")
    assert not learn.is_matched("synth-r0-gongshi-s0-w1-vgongshi0-0-both")  # the homophone's scene
    assert not learn.is_matched("synth-r0-gongshi-s0-w1-vyueju1-0-said")
    with pytest.raises(ValueError, match="no -said/-shown/-both"):
        learn.kind_of("synth-r0-gongshi-s0-w1-vgongshi1-0")
    with pytest.raises(ValueError, match="not an item id"):
        learn.is_matched("clip-7-said")


def test_word_table_needs_four_known_pairs():
    assert len(learn.word_table(FOUR)) == 8
    with pytest.raises(ValueError, match="unknown pair"):
        learn.word_table("gongshi,nope,fayan,yueju")
    with pytest.raises(ValueError, match="at least 4 pairs"):
        learn.word_table("gongshi,fayan,yueju")


def _pred(item_id: str, condition: str, right: bool, difficulty: str = "easy"):
    return score_mcq(item_id, condition, "A", "<think>x</think><answer>" + ("A" if right else "B") + "</answer>",
                     difficulty=difficulty)


def test_accuracy_table_groups_by_condition_kind_match_and_difficulty():
    matched, mismatched = "synth-r0-gongshi-s0-w0-vgongshi0-0", "synth-r0-gongshi-s0-w0-vyueju1-0"
    preds = [_pred(f"{matched}-said", "a", True), _pred(f"{mismatched}-said", "a", True, "medium"),
             _pred(f"{mismatched}-shown", "a", False, "medium"), _pred(f"{mismatched}-both", "av", True, "hard")]
    table = learn.accuracy_table(preds)
    assert table["a"]["all"] == {"n": 3, "acc": round(2 / 3, 3)}
    assert table["a"]["said"] == {"n": 2, "acc": 1.0} and table["a"]["shown"] == {"n": 1, "acc": 0.0}
    assert table["a"]["matched"]["n"] == 1 and table["a"]["mismatched"] == {"n": 2, "acc": 0.5}
    assert table["a"]["medium"] == {"n": 2, "acc": 0.5} and table["av"] == {
        g: {"n": 1, "acc": 1.0} for g in ("all", "both", "mismatched", "hard")}


def test_verdict_says_whether_av_beats_both_single_streams_beyond_noise():
    def acc(a, v, av, n=300):
        return {c: {"all": {"n": n, "acc": x}} for c, x in (("a", a), ("v", v), ("av", av))}

    lines = learn.verdicts({"clear": acc(0.5, 0.4, 0.7), "tie": acc(0.5, 0.6, 0.6), "noise": acc(0.21, 0.23, 0.25),
                            "small n": acc(0.5, 0.4, 0.7, n=10)})
    assert "holds here" in lines[0] and "n = 300" in lines[0]
    assert "does NOT hold" in lines[1]  # AV ties V: not above both
    assert "within noise" in lines[2] and "within noise" in lines[3]


def test_above_is_a_one_sided_two_proportion_test():
    assert learn.above({"n": 360, "acc": 0.6}, {"n": 360, "acc": 0.5})  # z = 2.7
    assert not learn.above({"n": 360, "acc": 0.55}, {"n": 360, "acc": 0.5})  # z = 1.35
    assert learn.above({"n": 5, "acc": 1.0}, {"n": 5, "acc": 0.0}) and not learn.above({"n": 5, "acc": 0.0},
                                                                                     {"n": 5, "acc": 0.0})


def test_stage_train_names_the_missing_pipeline_output(tmp_path):
    with pytest.raises(SystemExit, match="run --stage data"):
        learn.train_and_evaluate(learn.BenchSettings(out=str(tmp_path), stage="train"))


def test_help_lists_every_number_with_its_default(capsys):
    with pytest.raises(SystemExit):
        learn.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in learn.NUMBER_HELP:
        flag = f"--{name.replace('_', '-')}"
        assert flag in text and f"(default: {getattr(learn.BenchSettings(out=''), name)})" in text, flag


@pytest.mark.slow  # synthesises 96 clips, runs the offline pipeline, 2 SFT + 2 GRPO steps through avcot.cli, 6 evals
def test_benchmark_runs_pipeline_sft_grpo_and_reports_every_model_and_condition(tmp_path):
    import json

    settings = learn.BenchSettings(out=str(tmp_path), pairs=SIX, renders=1, mismatches=1, sft_steps=2,
                                   grpo_steps=2, warmup=1, batch_size=4, grpo_prompts=2, max_new_tokens=8,
                                   workers=2)
    summary = learn.run(settings)
    assert summary["items"] == summary["test_items"] == 6 * 2 * 2 * 2 * 3  # sentences x (1+1) shown x 3 kinds
    assert 0 < summary["sft_items"] < summary["items"]  # only the items both teachers got right
    sft = [json.loads(x) for x in (tmp_path / "pipeline_train" / "sft.jsonl").read_text("utf-8").splitlines()]
    assert all(learn.is_matched(r["id"]) and r["trace"].endswith(f"<answer>{r['answer']}</answer>") for r in sft)
    assert (tmp_path / "sft" / "checkpoints" / "model-last" / "config.json").is_file()
    assert (tmp_path / "grpo" / "checkpoints" / "adapter-last").is_dir()
    table = (tmp_path / "summary.md").read_text(encoding="utf-8").splitlines()
    for model, run in (("sft", "sft"), ("sft+grpo", "grpo")):
        metrics = json.loads((tmp_path / run / "eval" / "metrics.json").read_text(encoding="utf-8"))
        for cond in ("a", "v", "av"):
            rows = [line for line in table if line.startswith(f"| {model} | {cond} | ")]
            acc = next(m["accuracy"] for m in metrics["by_modality"] if m["name"] == cond)
            assert len(rows) == 1 and rows[0].split(" | ")[2] == f"{acc:.2f}", (model, cond, rows)
    assert sum("the paper's ordering" in line for line in table) == 2
