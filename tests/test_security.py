"""Safe loading: weights_only torch.load everywhere, no remote code by default, safetensors adapters."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("avcot", "datamodules", "lit_modules", "demo", "bench", "tests")


def _python_files():
    for pkg in PACKAGES:
        yield from (ROOT / pkg).rglob("*.py")


def _calls(tree: ast.AST, dotted: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            yield node


def test_every_torch_load_is_weights_only():
    offenders = []
    for path in _python_files():
        for call in _calls(ast.parse(path.read_text(encoding="utf-8")), "torch.load"):
            kw = {k.arg: k.value for k in call.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_no_remote_code_is_enabled_in_project_code():
    offenders = []
    for path in _python_files():
        if path.name == Path(__file__).name:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                if isinstance(node.value, ast.Constant) and node.value.value is True:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno}")
    assert not offenders, f"trust_remote_code=True hard-coded at {offenders}"


@pytest.mark.parametrize("func", ["avcot.model:load_thinker", "avcot.model:_from_pretrained"])
def test_remote_code_is_opt_in(func):
    import importlib

    mod, name = func.split(":")
    params = inspect.signature(getattr(importlib.import_module(mod), name)).parameters
    if "trust_remote_code" in params and params["trust_remote_code"].default is not inspect.Parameter.empty:
        assert params["trust_remote_code"].default is False


def test_adapters_are_written_as_safetensors_only(tmp_path):
    from avcot.model import apply_lora, load_adapter, load_thinker

    model = apply_lora(load_thinker("tiny"))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    # A pickle-format adapter is refused before PEFT would unpickle it.
    (tmp_path / "adapter_model.safetensors").rename(tmp_path / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        load_adapter(load_thinker("tiny"), str(tmp_path))


# ---------------------------------------------------------------- bases load from safetensors only

SFT_MANIFEST = ROOT / "tests" / "data" / "synth" / "sft_avcot.jsonl"


@pytest.fixture(scope="module")
def safe_base(tmp_path_factory):
    """The tiny thinker and its processor saved as a checkpoint directory (weights in model.safetensors)."""
    import shutil

    from avcot.model import build_tiny_thinker
    from avcot.processor import TINY_DIR

    path = tmp_path_factory.mktemp("safe_base")
    shutil.copytree(TINY_DIR, path, dirs_exist_ok=True)
    build_tiny_thinker().save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return path


def _pickle_copy(safe_base: Path, dest: Path) -> Path:
    """`safe_base` with its weights as a torch pickle (`pytorch_model.bin`) instead of safetensors."""
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(safe_base, dest)
    state = load_file(dest / "model.safetensors")
    (dest / "model.safetensors").unlink()
    torch.save(state, dest / "pytorch_model.bin")  # what transformers' legacy format holds
    return dest


@pytest.fixture(scope="module")
def pickle_base(safe_base, tmp_path_factory):
    return _pickle_copy(safe_base, tmp_path_factory.mktemp("pickle") / "base")


def _one_line_refusal(message: str, name: str) -> None:
    assert "\n" not in message.strip() and name in message and "pickle" in message and "safetensors" in message


def test_pickle_only_base_is_refused_with_a_one_line_error(pickle_base):
    from avcot.model import UnsafeCheckpointError, load_thinker

    with pytest.raises(UnsafeCheckpointError) as e:
        load_thinker(str(pickle_base))
    _one_line_refusal(str(e.value), str(pickle_base / "pytorch_model.bin"))


def test_safetensors_index_pointing_to_pickle_shards_is_refused(safe_base, tmp_path):
    import json

    from avcot.model import UnsafeCheckpointError, load_thinker

    base = _pickle_copy(safe_base, tmp_path / "base")
    (base / "pytorch_model.bin").rename(base / "shard-1.bin")
    (base / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": "shard-1.bin"}}))
    with pytest.raises(UnsafeCheckpointError, match="shard-1.bin: it is a pickle file"):
        load_thinker(str(base))


def test_missing_weights_and_missing_shard_are_one_line_errors(safe_base, tmp_path):
    import json
    import shutil

    from avcot.model import CheckpointError, UnsafeCheckpointError, load_thinker

    base = tmp_path / "base"
    shutil.copytree(safe_base, base)
    (base / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model weights: expected model.safetensors") as e:
        load_thinker(str(base))
    assert not isinstance(e.value, UnsafeCheckpointError)
    (base / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-1.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-1.safetensors is listed in .* but does not exist"):
        load_thinker(str(base))


def test_safetensors_base_loads_and_a_stray_pickle_beside_it_is_never_read(safe_base, tmp_path, monkeypatch):
    import shutil

    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration as Thinker

    from avcot.model import build_tiny_thinker, load_thinker

    base = tmp_path / "base"
    shutil.copytree(safe_base, base)
    (base / "pytorch_model.bin").write_bytes(b"not a pickle: reading it would fail")
    seen = {}
    original = Thinker.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Thinker, "from_pretrained", classmethod(spy))
    model = load_thinker(str(base))
    assert seen["use_safetensors"] is True
    expected = build_tiny_thinker().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_fit_with_a_pickle_base_prints_one_line_and_exits_2(pickle_base, tmp_path, monkeypatch, capsys):
    from avcot.cli import run

    monkeypatch.chdir(ROOT)
    code = run(["fit", "--config", "configs/tiny.yaml", "--model.init_args.base", str(pickle_base),
                "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
                "--data.init_args.train_manifest", str(SFT_MANIFEST), "--trainer.max_steps", "1",
                "--predictions.output_path", str(tmp_path / "p.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: refusing to load")
    _one_line_refusal(err[-1], "pytorch_model.bin")
    assert "Traceback" not in "\n".join(err)


def test_eval_with_a_pickle_checkpoint_prints_one_line_and_exits_2(pickle_base, tmp_path, capsys):
    from avcot.cli_errors import run_command
    from avcot.eval.__main__ import main as eval_main

    source = (ROOT / "avcot" / "eval" / "__main__.py").read_text(encoding="utf-8")
    assert "sys.exit(run_command(main))" in source  # the module's command path goes through run_command
    code = run_command(eval_main, ["cavsr", "--ckpt", str(pickle_base), "--data", str(SFT_MANIFEST),
                                   "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: refusing to load")
    _one_line_refusal(err[-1], "pytorch_model.bin")


def test_demo_with_a_pickle_base_prints_one_line_and_exits_2(pickle_base, capsys):
    from demo.app import main as demo_main

    assert demo_main(["--base", str(pickle_base)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot load base model")
    _one_line_refusal(err, "pytorch_model.bin")
