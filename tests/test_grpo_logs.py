"""What GRPOModule logs (metrics.csv columns, sample completions), what it predicts, and what it says it loaded."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from avcot.completion_samples import CompletionSample, completion_samples, markdown_table, samples_due

REPO = Path(__file__).resolve().parent.parent
MCQ = REPO / "tests" / "data" / "synth" / "mcq.jsonl"
G = 3


def _distinct_chars(completions, **kw) -> list[float]:
    """Varies on a random model, so the advantages are not all zero."""
    return [len(set(c)) / max(len(c), 1) for c in completions]


def test_samples_due_at_the_first_step_and_every_n_updates():
    assert [s for s in range(1, 8) if samples_due(s, 1, 3)] == [1, 3, 6]
    assert [s for s in range(2, 13, 2) if samples_due(s, 2, 3)] == [2, 4, 6, 10, 12]  # 2 updates a step
    assert not any(samples_due(s, 1, 0) for s in range(1, 5))


def test_completion_samples_pair_each_completion_with_its_prompt():
    samples = completion_samples(5, ["p", "q"], ["a", "b", "c", "d"], [0.5, 1, 0, 2], group_size=2)
    assert [(s.prompt_id, s.completion, s.reward) for s in samples] == [("p", "a", 0.5), ("p", "b", 1.0),
                                                                       ("q", "c", 0.0), ("q", "d", 2.0)]
    with pytest.raises(ValueError, match="2 prompts x 3 completions"):
        completion_samples(5, ["p", "q"], ["a"] * 4, [0.0] * 4, group_size=3)
    table = markdown_table([CompletionSample(1, "p|1", "line\nnext | x", 0.25)])
    assert table.splitlines()[2] == r"| p\|1 | 0.2500 | line<br>next \| x |"


def test_tiny_fit_writes_the_columns_people_read_and_sample_completions(tmp_path):
    import lightning as L

    from avcot.model import LoraSettings
    from datamodules.mcq import McqDataModule
    from lit_modules.grpo import GRPOModule

    seen: list[set] = []

    def spy_reward(completions, **kw):
        seen.append(set(kw))
        return [0.0] * len(completions)

    dm = McqDataModule(train_manifest=str(MCQ), target="none", batch_size=2, num_frames=2, frame_size=56,
                       max_seconds=2.0, hash_media=True)
    module = GRPOModule(base="tiny", group_size=G, max_new_tokens=5, lr=5e-2, lora=LoraSettings(dropout=0.0),
                        log_samples_every_n_steps=2, warmup_steps=2)
    module.reward_funcs, module.reward_weights = [_distinct_chars, spy_reward], [1.0, 1.0]
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="")
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=logger, default_root_dir=tmp_path, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                        enable_checkpointing=False)
    trainer.fit(module, dm)
    assert seen == [{"references", "answers"}] * 3  # hashed media keys and ids never reach a reward
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").open()))
    for column in ("reward/mean", "reward/_distinct_chars/mean", "reward/spy_reward/mean", "kl", "clip_fraction",
                   "completion/length", "lr"):
        values = [r[column] for r in rows if r.get(column)]
        assert len(values) == 3, column  # one value per step
    lrs = [float(r["lr"]) for r in rows if r.get("lr")]
    assert lrs == pytest.approx([2.5e-2, 5e-2, 5e-2])  # the rate each step's update used: half-way through warm-up
    samples = [json.loads(x) for x in (Path(logger.log_dir) / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1] * (2 * G) + [2] * (2 * G)  # the first step, then every 2
    ids = {json.loads(x)["id"] for x in MCQ.read_text().splitlines()}
    assert all(s["prompt_id"] in ids and isinstance(s["completion"], str) for s in samples)
    assert all(0.0 <= s["reward"] <= 1.0 for s in samples) and len({s["prompt_id"] for s in samples[:G]}) == 1


def test_samples_go_to_tensorboard_and_never_fail_on_other_loggers(tmp_path, caplog):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_modules.sample_log import write_samples

    class Broken(CSVLogger):
        @property
        def log_dir(self) -> str:
            raise OSError("disk full")

    tb = TensorBoardLogger(tmp_path, name="tb")
    samples = [CompletionSample(4, "q1", "<answer>B</answer>", 1.0)]
    with caplog.at_level(logging.WARNING, logger="lit_modules.sample_log"):
        took = write_samples([tb, object(), Broken(tmp_path)], samples, step=4)
        write_samples([Broken(tmp_path)], samples, step=5)
    assert took == ["TensorBoardLogger"]
    assert caplog.text.count("disk full") == 1  # warned once, not at every logging step
    tb.experiment.flush()
    events = EventAccumulator(tb.log_dir, size_guidance={"tensors": 0}).Reload()
    (event,) = events.Tensors("samples/text_summary")
    assert event.step == 4 and "q1" in event.tensor_proto.string_val[0].decode()


def test_it_says_once_which_adapter_it_starts_from(caplog):
    from lit_modules.grpo import GRPOModule

    module = GRPOModule(base="tiny", group_size=2, max_new_tokens=2)
    with caplog.at_level(logging.INFO):
        module.configure_model()
        module.configure_model()  # Lightning may call it again: the model is built, and announced, once
    said = [r for r in caplog.records if "GRPO policy starts from" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert "a fresh LoRA adapter" in said[0].getMessage() and "base 'tiny'" in said[0].getMessage()


def test_predict_through_the_cli_writes_one_line_per_question(tmp_path, monkeypatch):
    from avcot.cli import main

    monkeypatch.chdir(REPO)
    out = tmp_path / "predictions.jsonl"
    main(["predict", "--config", "configs/tiny_grpo.yaml", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.logger.init_args.save_dir", str(tmp_path), "--data.init_args.test_manifest", str(MCQ),
          "--data.init_args.eval_batch_size", "3", "--model.init_args.max_new_tokens", "3",
          "--predictions.output_path", str(out)])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [json.loads(x)["id"] for x in MCQ.read_text().splitlines()]
    assert all(isinstance(x["text"], str) and x["extracted"] in ("", "A", "B", "C", "D") for x in lines)
