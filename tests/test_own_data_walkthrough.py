"""docs/own_data.md's walkthrough block, run as written (commands read from the doc) on six synthetic clips in a
temporary folder, each `python -m` command called in-process through its module's `main`, with fewer steps and
tokens; every step's outputs are checked, and the final eval report has rows."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "own_data.md"

FAST = {  # appended to the doc's command (argparse and LightningCLI: the last value wins)
    "avcot.cli fit --config configs/tiny.yaml": ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"],
    "avcot.cli fit --config configs/tiny_cavsr_grpo.yaml": ["--trainer.max_steps", "1",
                                                             "--model.init_args.max_new_tokens", "8"],
    "avcot.eval": ["--max-new-tokens", "8", "--no-progress"],
    "avcot.pipeline cavsr": ["--no-progress"],
}


def walkthrough() -> list[str]:
    """The steps of the doc's walkthrough block: `python -m ...` lines and `python - <<'EOF'` scripts."""
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- walkthrough -->\n```bash\n(.*?)\n```", text, re.S)
    assert block, f"{DOC} has no walkthrough block"
    steps, lines = [], iter(block.group(1).splitlines())
    for line in lines:
        if line.startswith("python - <<'EOF'"):
            steps.append("script:" + "\n".join(iter(lambda: next(lines), "EOF")))
        elif line.startswith("python -m "):
            steps.append(line)
        else:
            assert line.startswith("#") or not line.strip(), f"unexpected line in the walkthrough: {line!r}"
    return steps


def _run(step: str, capsys) -> None:
    if step.startswith("script:"):
        exec(compile(step.removeprefix("script:"), "walkthrough", "exec"), {})
        return
    argv = shlex.split(step)[2:]
    module, args = argv[0], argv[1:]
    args += next((v for k, v in FAST.items() if " ".join(argv).startswith(k)), [])
    if module == "avcot.synth":
        from avcot.synth import main
        assert main(args) == 0
    elif module == "avcot.pipeline":
        from avcot.pipeline.__main__ import main
        assert main(args) == 0, capsys.readouterr().err
    elif module == "avcot.cli":
        from avcot.cli import main
        main(args)
    elif module == "avcot.eval":
        from avcot.eval.__main__ import main
        assert main(args) == 0
    elif module == "avcot.export":
        from avcot.export import main
        assert main(args) == 0
    elif module == "demo.app":  # serving blocks; load the model and build the UI as `main` does
        from demo.app import build_app, load_model, parse_args

        opts = parse_args(args)
        Path("uploads").mkdir(exist_ok=True)
        app = build_app(load_model(opts.base, opts.adapter, dtype=opts.dtype), Path("uploads"), examples_dir=None)
        assert app is not None
    else:
        raise AssertionError(f"no runner for {step!r}")


def _label(step: str) -> str:
    """script, the pipeline subcommand, the fit config's name, or the module."""
    if step.startswith("script:"):
        return "script"
    argv = shlex.split(step)[2:]
    if argv[0] == "avcot.pipeline":
        return argv[1]
    if argv[0] == "avcot.cli":
        return Path(argv[argv.index("--config") + 1]).stem
    return argv[0]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_walkthrough_commands_are_in_the_readme_order():
    assert [_label(s) for s in walkthrough()] == ["avcot.synth", "script", "ingest", "cavsr", "split", "tiny",
                                                 "tiny_cavsr_grpo", "avcot.eval", "avcot.export", "demo.app"]
    assert "docs/own_data.md" in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_own_data_walkthrough_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for shared in ("configs", "tests"):  # the doc's commands name configs/ (and they name the fixtures)
        (tmp_path / shared).symlink_to(REPO / shared)
    own = tmp_path / "runs" / "own"
    checks = {  # what each step must have written
        "avcot.synth": lambda: len(_rows(own / "synth" / "manifest.jsonl")) == 6,
        "script": lambda: len(list((own / "clips").glob("*.txt"))) == 6,
        "ingest": lambda: len(_rows(own / "raw.jsonl")) == 6 and all(r.get("text") for r in _rows(own / "raw.jsonl")),
        "cavsr": lambda: len(_rows(own / "cavsr" / "sft.jsonl")) >= 4,
        "split": lambda: all(_rows(own / "cavsr" / f"{s}.jsonl") for s in ("train", "val", "test")),
        "tiny": lambda: (own / "sft" / "checkpoints" / "model-last" / "model.safetensors").is_file(),
        "tiny_cavsr_grpo": lambda: (own / "grpo" / "checkpoints" / "adapter-last").is_dir(),
        "avcot.eval": lambda: _rows(own / "eval" / "predictions.jsonl") and (own / "eval" / "report.md").is_file(),
        "avcot.export": lambda: (own / "merged" / "config.json").is_file(),
        "demo.app": lambda: True,
    }
    for step in walkthrough():
        _run(step, capsys)
        assert checks[_label(step)](), f"step wrote nothing usable: {step[:120]}"
    test_ids = {r["id"] for r in _rows(own / "cavsr" / "test.jsonl")}
    assert {r["id"] for r in _rows(own / "eval" / "predictions.jsonl")} == test_ids
    metrics = json.loads((own / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics
