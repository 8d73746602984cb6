"""Pure helpers of the CAVSR learning benchmark (the benchmark itself is a script, not a test)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("learn_cavsr", Path(__file__).parents[1] / "bench" / "learn_cavsr.py")
learn = importlib.util.module_from_spec(SPEC)
sys.modules["learn_cavsr"] = learn  # dataclasses look their module up here
SPEC.loader.exec_module(learn)


def _row(sid, target, competitor, cue):
    return {"sentence_id": sid, "target": target, "competitor": competitor, "cue": cue}


def test_usable_rows_keep_only_video_decidable_clips_and_add_groups():
    rows = [_row("gongshi-s0", "公式", "公示", "subtitle"),  # same tones, visual cue: kept
            _row("shiyan-s0", "实验", "试验", "subtitle"),  # shi2 vs shi4: the audio decides, dropped
            _row("gongshi-s0", "公式", "公示", "conflict")]  # the picture shows the other word: dropped
    kept = learn.usable_rows(rows)
    assert [(r["sentence_id"], r["cue"]) for r in kept] == [("gongshi-s0", "subtitle")]
    assert kept[0]["content"] == "gongshi-s0|公式|subtitle" and kept[0]["context"] == "gongshi-s0|subtitle"


def test_avcot_trace_names_the_screen_text_and_ends_with_the_transcript():
    from avcot.traces import parse_avcot

    row = dict(_row("shichang-s1", "市场", "试场", "background"), screen_text="农贸市场",
               pinyin="shi4 chang3 li3 mian4 ren2 hen3 duo1", text="市场里面人很多")
    trace = learn.avcot_trace(row)
    assert "背景文字：农贸市场" in trace and "试场" in trace
    assert parse_avcot(trace).transcription == "市场里面人很多"


def test_split_groups_never_straddle_train_and_test():
    rows = learn.usable_rows([dict(_row(f"p{i % 3}-s{i % 2}", "公式", "公示", cue), id=str(i))
                              for i, cue in enumerate(["subtitle", "scene", "background"] * 8)])
    for column in ("content", "context", "sentence"):
        settings = learn.BenchSettings(out="", split=column, test_fraction=0.3)
        train, test = learn.split(rows, settings)
        key = "sentence_id" if column == "sentence" else column
        assert train and test and len(train) + len(test) == len(rows)
        assert not {r[key] for r in train} & {r[key] for r in test}


def test_extra_renderings_keep_only_trained_contents_and_text_cues_are_the_read_ones():
    train = learn.usable_rows([dict(_row("p-s0", "公式", "公示", "subtitle"), id="t")])
    extra = learn.usable_rows([dict(_row("p-s0", "公式", "公示", "subtitle"), id="x1"),
                               dict(_row("p-s1", "公式", "公示", "subtitle"), id="x2")])  # a content not trained on
    assert [r["id"] for r in learn.of_trained_contents(extra, train)] == ["x1"]
    assert set(learn.READ_CUES) < set(learn.VISUAL_CUES) and "scene" not in learn.READ_CUES


def _pred(pid: str, output: str, hypothesis: str, ablation: str = "true"):
    from avcot.eval.metrics import CavsrPrediction

    return CavsrPrediction(id=pid, ablation=ablation, reference="", output=output, hypothesis=hypothesis,
                           substitutions=0, deletions=0, insertions=0, ref_len=1)


def test_perception_tells_a_wrong_reading_from_a_right_one_lost_in_the_answer():
    from avcot.traces import AVCoTTrace, render_avcot

    def said(seen: str, written: str) -> str:
        return render_avcot(AVCoTTrace(f"背景文字：农贸{seen}", "shi4 chang3", f"支持“{seen}”", f"{written}里面人很多"))

    rows = [dict(_row("shichang-s1", "市场", "试场", cue), id=str(i))
            for i, cue in enumerate(["background", "background", "subtitle", "scene", "background"])]
    preds = [_pred("0", said("市场", "市场"), "市场里面人很多"),  # read right, answered right
             _pred("1", said("试场", "试场"), "试场里面人很多"),  # read wrong, answered as read
             _pred("2", said("市场", "试场"), "试场里面人很多"),  # read right, lost on the way
             _pred("3", said("市场", "市场"), "市场里面人很多"),  # scene: its line describes, does not quote
             _pred("4", said("试场", "试场"), "试场里面人很多", ablation="random")]  # only the true video counts
    assert learn.perception(preds, rows) == {"n": 3, "read": 2, "agree": 2}
    assert learn.perception([_pred("0", "市场里面人很多", "市场里面人很多")], rows) is None  # a plain transcript
    summary = {"date": "d", "command": "c", "machine": "m", "clips_train": 1, "clips_test": 1, "total_seconds": 1,
               "runs": {"avcot": {"train_seconds": 1, "cer": {"true": 0.1}, "perception": {"n": 3, "read": 2,
                                                                                          "agree": 2},
                                  "outcomes": {"true": {"all": {"word": 0.5, "competitor": 0.5, "frame": 1.0}}}}}}
    assert "names the spoken word in 2 of 3, and the transcription names the word that line names in 2" in \
        learn.summary_table(summary)


def test_outcome_separates_word_competitor_and_frame():
    row = dict(_row("shichang-s1", "市场", "试场", "scene"), text="市场里面人很多")
    assert learn.outcome("市场里面人很多", row) == {"word": True, "competitor": False, "frame": True, "exact": True}
    assert learn.outcome("试场里面人很多", row) == {"word": False, "competitor": True, "frame": True, "exact": False}
    assert learn.outcome("明天早上我去市场", row) == {"word": True, "competitor": False, "frame": False,
                                                      "exact": False}


def test_competitor_video_rows_swap_in_the_other_words_picture():
    rows = [dict(_row("p-s0", "公式", "公示", "scene"), id="a", video="a.mp4"),
            dict(_row("p-s0", "公示", "公式", "scene"), id="b", video="b.mp4"),
            dict(_row("p-s0", "公式", "公示", "subtitle"), id="c", video="c.mp4")]  # no partner
    swapped, unpaired = learn.competitor_video_rows(rows)
    assert [(r["id"], r["video"], r["target"]) for r in swapped] == [("a", "b.mp4", "公式"), ("b", "a.mp4", "公示")]
    assert unpaired == 1


def test_breakdown_rates_per_condition_and_cue():
    from avcot.eval.metrics import CavsrPrediction

    rows = [dict(_row("p-s0", "公式", "公示", "scene"), id="a", text="公式很好"),
            dict(_row("p-s0", "公示", "公式", "subtitle"), id="b", text="公示很好")]
    preds = [CavsrPrediction(id="a", ablation="true", reference="公式很好", output="", hypothesis="公式很好",
                             substitutions=0, deletions=0, insertions=0, ref_len=4),
             CavsrPrediction(id="b", ablation="true", reference="公示很好", output="", hypothesis="公式很好",
                             substitutions=0, deletions=0, insertions=0, ref_len=4)]
    table = learn.breakdown(preds, rows)
    assert table["true"]["all"] == {"n": 2, "word": 0.5, "competitor": 0.5, "frame": 1.0, "exact": 0.5}
    assert table["true"]["subtitle"]["competitor"] == 1.0 and table["true"]["scene"]["word"] == 1.0


def _summary(cer_a: float, word_a: float, cer_t: float, word_t: float) -> dict:
    rates = {"n": 2, "word": 0.5, "competitor": 0.25, "frame": 1.0, "exact": 0.5}

    def one(cer: float, word: float) -> dict:
        return {"train_seconds": 1, "cer": {"true": cer, "random": 0.2},
                "outcomes": {"true": {"all": dict(rates, word=word), "scene": dict(rates, word=1.0)},
                             "random": {"all": dict(rates, word=0.0), "scene": dict(rates, word=0.0)}}}

    return {"date": "d", "command": "c", "machine": "m", "clips_train": 4, "clips_test": 2, "total_seconds": 2,
            "runs": {"avcot": one(cer_a, word_a), "transcript": one(cer_t, word_t)}}


def test_summary_table_has_a_row_per_target_and_condition_with_its_numbers():
    lines = learn.summary_table(_summary(0.0412, 0.5, 0.1, 0.25)).splitlines()
    assert "| avcot | true | 0.041 | 0.50 | 0.25 | 1.00 | 1.00 |" in lines
    assert "| avcot | random | 0.200 | 0.00 | 0.25 | 1.00 | 0.00 |" in lines
    assert "| transcript | true | 0.100 | 0.25 | 0.25 | 1.00 | 1.00 |" in lines
    assert any(line.endswith("| scene |") for line in lines)


@pytest.mark.parametrize("cer_t, word_t, verdict", [(0.1, 0.25, "helps here"), (0.01, 0.75, "hurts here"),
                                                    (0.01, 0.25, "is mixed here")])
def test_cot_verdict_compares_true_video_cer_and_word_accuracy(cer_t, word_t, verdict):
    text = learn.cot_verdict(_summary(0.05, 0.5, cer_t, word_t)["runs"])
    assert text.endswith(f"The chain of thought {verdict}.")
    assert f"CER 0.050 vs {cer_t:.3f}" in text and "video gain (random minus true CER) +0.150" in text


def test_cot_verdict_with_one_target_says_how_to_compare():
    runs = _summary(0.05, 0.5, 0.1, 0.25)["runs"]
    assert "--target both" in learn.cot_verdict({"avcot": runs["avcot"]})


def test_cli_args_train_the_recipe_with_this_runs_data_target_and_budget(tmp_path):
    from avcot.cli import main as cli_main

    settings = learn.BenchSettings(out=str(tmp_path), steps=7, batch_size=3, lr=1e-3, seed=4)
    args = learn.cli_args(settings, "transcript")
    assert args[0] == "fit"
    cfg = cli_main(args[1:], run=False).config  # parsed as fit would, without training
    assert cfg.trainer.max_steps == 7 and cfg.trainer.default_root_dir == str(tmp_path / "transcript")
    assert cfg.data.init_args.target == "transcript" and cfg.data.init_args.batch_size == 3
    assert cfg.data.init_args.train_manifest == str(tmp_path / "train.jsonl")
    assert cfg.model.init_args.train_towers is True and cfg.model.init_args.lr == 1e-3
    assert cfg.model.init_args.seed == 4 and cfg.seed_everything == 4
    assert cfg.model.init_args.base == "tiny"  # the embedded init unless --base names a checkpoint
    other = learn.cli_args(learn.BenchSettings(out=str(tmp_path), base=str(tmp_path / "init"), train_towers="audio"),
                           "avcot")
    other_cfg = cli_main(other[1:], run=False).config
    assert other_cfg.model.init_args.base == str(tmp_path / "init")
    assert other_cfg.model.init_args.train_towers == "audio"  # the vision tower stays as the base has it
    frozen = learn.cli_args(learn.BenchSettings(out=str(tmp_path), train_towers="none"), "avcot")
    assert cli_main(frozen[1:], run=False).config.model.init_args.train_towers is False


def test_parse_voices():
    assert learn.parse_voices("120:40, 160:60") == ((120, 40), (160, 60))
    assert learn.parse_voices("") == ()
    with pytest.raises(ValueError, match="rate:pitch"):
        learn.parse_voices("fast")


def test_a_child_job_gets_exactly_the_settings_back_from_its_command_line():
    from bench.learn_fit import settings_argv

    settings = learn.BenchSettings(out="/tmp/x", voices="", pairs="gongshi", lr=1e-3, train_towers="audio",
                                   target="transcript", stage="target", jobs=1, threads=1, base="/m")
    assert learn.BenchSettings(**vars(learn.parser().parse_args(settings_argv(settings)))) == settings
    assert "--train-towers audio" in " ".join(settings_argv(settings))


def test_two_jobs_only_when_both_targets_train_on_a_multicore_cpu(monkeypatch):
    monkeypatch.setattr(learn.os, "cpu_count", lambda: 2)
    assert learn.job_count(learn.BenchSettings(out="")) == 2
    assert learn.job_count(learn.BenchSettings(out="", target="avcot")) == 1
    assert learn.job_count(learn.BenchSettings(out="", device="cuda")) == 1
    assert learn.job_count(learn.BenchSettings(out="", jobs=1)) == 1
    assert learn.job_count(learn.BenchSettings(out="", target="avcot", jobs=2)) == 1  # one target, one job
    monkeypatch.setattr(learn.os, "cpu_count", lambda: 1)
    assert learn.job_count(learn.BenchSettings(out="")) == 1


@pytest.mark.parametrize("grpo_target", ["avcot", "transcript"])
def test_two_jobs_train_the_transcript_target_in_a_child_beside_the_avcot_run(tmp_path, monkeypatch, grpo_target):
    import json

    from bench import learn_fit

    monkeypatch.setattr(learn.os, "cpu_count", lambda: 4)
    seen = {}

    def child(argv, log):  # stands in for the real child: records its settings and writes what it would
        seen["settings"] = learn.BenchSettings(**vars(learn.parser().parse_args(argv[2:])))
        seen["script"] = argv[1]
        code = f"import json,sys; open({str(tmp_path / 'transcript' / 'run.json')!r}, 'w').write(" \
               f"json.dumps({{'transcript': {{'cer': 0.5}}}})); print('done')"
        return learn_fit.start_job([sys.executable, "-c", code], log)

    monkeypatch.setattr(learn, "start_job", child)
    monkeypatch.setattr(learn, "target_run", lambda s, t, rows: {t: {"threads": learn.torch.get_num_threads(),
                                                                      "grpo_steps": s.grpo_steps}})
    before = learn.torch.get_num_threads()
    try:
        runs = learn.train_targets(learn.BenchSettings(out=str(tmp_path), read_steps=5, read_plan="5", base="/read",
                                                          grpo_steps=3, grpo_target=grpo_target), [])
    finally:
        learn.torch.set_num_threads(before)
    assert list(runs) == ["avcot", "transcript"] and runs["transcript"] == {"cer": 0.5}
    assert runs["avcot"]["threads"] == 2  # half of the 4 cores here, half in the child
    assert seen["script"].endswith("learn_cavsr.py")
    # read once, by the parent (either flag: the child gets neither); GRPO where its SFT model trains
    assert runs["avcot"]["grpo_steps"] == (3 if grpo_target == "avcot" else 0)
    assert seen["settings"] == learn.BenchSettings(out=str(tmp_path), target="transcript", stage="target", jobs=1,
                                                   threads=2, base="/read", grpo_target=grpo_target,
                                                   grpo_steps=3 if grpo_target == "transcript" else 0)
    assert (tmp_path / "transcript" / "log.txt").read_text(encoding="utf-8") == "done\n"
    assert json.loads((tmp_path / "transcript" / "run.json").read_text(encoding="utf-8"))


def test_a_failed_child_job_is_reported_with_its_log(tmp_path):
    from bench.learn_fit import finish_job, start_job

    log = tmp_path / "log.txt"
    job = start_job([sys.executable, "-c", "print('loading'); raise SystemExit('no manifest here')"], log)
    with pytest.raises(RuntimeError, match=r"(?s)exit 1.*no manifest here"):
        finish_job(job, log, tmp_path / "run.json")
    job = start_job([sys.executable, "-c", "print('ok')"], log)  # exits 0 but writes no result
    with pytest.raises(RuntimeError, match="no .*run.json"):
        finish_job(job, log, tmp_path / "run.json")


def test_stage_target_trains_one_target_into_its_run_json(tmp_path, monkeypatch):
    import json

    with pytest.raises(SystemExit, match="trains one target"):
        learn.target_stage(learn.BenchSettings(out=str(tmp_path), stage="target"))
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / name).write_text(json.dumps({"id": name, "cue": "scene"}) + "\n", encoding="utf-8")
    monkeypatch.setattr(learn, "target_run", lambda s, t, rows: {t: {"rows": [r["id"] for r in rows]}})
    runs = learn.run(learn.BenchSettings(out=str(tmp_path), stage="target", target="transcript"))
    assert runs == {"transcript": {"rows": ["test.jsonl"]}}
    assert json.loads((tmp_path / "transcript" / "run.json").read_text(encoding="utf-8")) == runs
    assert not (tmp_path / "results.json").exists()  # the parent writes the summary, not the child


@pytest.mark.slow  # synthesises 36 clips, reads 2 steps, trains two targets and GRPO 2 steps, 15 eval passes
def test_benchmark_trains_through_the_cli_and_reports_every_target_and_condition(tmp_path):
    import json

    settings = learn.BenchSettings(out=str(tmp_path), renders=1, pairs="gongshi", steps=2, warmup=1,
                                   max_new_tokens=8, workers=2, batch_size=4, grpo_steps=2, grpo_prompts=2,
                                   read_plan="1,1@1e-3:0.5", jobs=2)  # the transcript target in a child process
    summary = learn.run(settings)
    assert [r["model"] for r in summary["read"]] == [str(tmp_path / d / "model") for d in ("read", "read2")]
    assert summary["settings"]["base"] == summary["read"][-1]["model"]  # the SFT starts from the last stage
    assert summary["clips_train"] == summary["clips_test"] == 12  # 2 templates x 2 words x 3 cues
    assert len(learn.read_rows(tmp_path / "rl.jsonl")) == 12  # fresh renderings for the rollouts
    table = (tmp_path / "summary.md").read_text(encoding="utf-8").splitlines()
    conditions = ("true", "black", "random", "audio_only", "competitor_video")
    for target, run_dir in (("avcot", "avcot"), ("transcript", "transcript"), ("avcot+grpo", "avcot_grpo")):
        run = tmp_path / run_dir
        written = "adapter-last/adapter_config.json" if run_dir == "avcot_grpo" else "model-last/config.json"
        assert (run / "checkpoints" / written).is_file()  # written by the CLI's fit
        assert (run / "version_0" / "config.yaml").is_file()
        metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))["cer_by_ablation"]
        swap = json.loads((run / "eval_competitor_video" / "metrics.json").read_text(encoding="utf-8"))
        cer = {m["name"]: m["cer"] for m in metrics} | {"competitor_video": swap["cer_by_ablation"][0]["cer"]}
        assert set(cer) == set(conditions)
        for cond in conditions:  # each row's CER is the one avcot.eval wrote
            rows = [line for line in table if line.startswith(f"| {target} | {cond} | ")]
            assert len(rows) == 1 and rows[0].split(" | ")[2] == f"{cer[cond]:.3f}", (target, cond, rows)
    assert any(line.startswith("AV-CoT vs w/o AV-CoT") for line in table)
    assert any(line.startswith("GRPO reward") for line in table)
    assert any(line.startswith("GRPO vs SFT (AV-CoT)") for line in table)
    assert any("0.5 = chance): 1 steps at lr 0.002, " in line
               and "; then 1 steps at lr 0.001, 0.5 subtitles, " in line for line in table)


def test_stage_train_reuses_the_manifests_of_a_data_run_and_names_what_is_missing(tmp_path):
    import json

    settings = learn.BenchSettings(out=str(tmp_path), stage="train")
    with pytest.raises(SystemExit, match="--stage data first"):
        learn.reuse_data(settings)
    train, test = [{"id": "a", "cue": "background"}, {"id": "b", "cue": "scene"}], [{"id": "c", "cue": "subtitle"}]
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert learn.reuse_data(settings) == (train, train, test)  # --split render: the usable clips are the train set
    assert learn.reuse_data(learn.BenchSettings(out=str(tmp_path), split="content"))[0] == train + test


def test_stage_eval_scores_one_trained_model_on_out_test_manifests(tmp_path, monkeypatch):
    import json

    with pytest.raises(SystemExit, match="--target avcot|transcript and --base"):
        learn.run(learn.BenchSettings(out=str(tmp_path), stage="eval", base="/m"))  # both targets
    with pytest.raises(SystemExit, match="--base"):
        learn.run(learn.BenchSettings(out=str(tmp_path), stage="eval", target="avcot"))  # the random init
    settings = learn.BenchSettings(out=str(tmp_path), stage="eval", target="transcript", base=str(tmp_path / "m"))
    with pytest.raises(SystemExit, match="run --stage data first"):
        learn.run(settings)
    row = dict(_row("shichang-s1", "市场", "试场", "scene"), id="c0", text="市场里面人很多")
    (tmp_path / "test.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    seen = []

    def fake_eval(model_dir, s, target, rows, adapter=None):
        seen.append((model_dir, target, [r["id"] for r in rows]))
        return [_pred("c0", "市场里面人很多", "市场里面人很多", ablation) for ablation in ("true", "random")]

    monkeypatch.setattr(learn, "evaluate_all", fake_eval)
    summary = learn.run(settings)
    assert seen == [(tmp_path / "m", "transcript", ["c0"])]
    written = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert written["clips_test"] == 1 and written["runs"]["transcript"]["model"] == str(tmp_path / "m")
    assert summary["runs"]["transcript"]["outcomes"]["true"]["all"]["word"] == 1.0
    assert "| transcript | true |" in (tmp_path / "summary.md").read_text(encoding="utf-8")
