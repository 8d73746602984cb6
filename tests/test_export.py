"""avcot.export: merged logits equal adapter logits on real clips, stock classes reload every layout, the
talker/token2wav of a full checkpoint are carried byte for byte, full fine-tuned thinkers are re-saved,
quantized bases and other user mistakes are refused with one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avcot.export import ExportError, build_parser, export, main, merge_adapter, quantization_of

SYNTH = Path(__file__).parent / "data" / "synth"
ATOL = 1e-5  # merging reorders fp32 sums: W x + B(A x) vs (W + B A) x


def _clip_batch(tmp: Path) -> dict:
    """A collated batch of two committed synthetic clips (audio + video + AV-CoT target)."""
    from avcot.chat import model_inputs
    from datamodules.cavsr import CavsrDataModule

    rows = [json.loads(line) for line in (SYNTH / "sft_avcot.jsonl").read_text(encoding="utf-8").splitlines()[:2]]
    rows = [dict(r, video=str(SYNTH / r["video"]), audio=str(SYNTH / r["audio"])) for r in rows]
    manifest = tmp / "clips.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    dm = CavsrDataModule(train_manifest=str(manifest), val_fraction=0.0, batch_size=2,
                         rejects_path=str(tmp / "rejects.jsonl"))
    dm.setup("fit")
    return model_inputs(next(iter(dm.train_dataloader())).inputs)


def _logits(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits  # [B, L, V]


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    from avcot.export_layouts import tensor_files

    out = {}
    for name, file in tensor_files(directory).items():
        with safe_open(str(file), framework="pt") as f:
            out[name] = f.get_tensor(name)
    return out


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def adapter(work) -> Path:
    """A LoRA adapter on the tiny thinker with a trained LM head copy, saved as training saves it."""
    from avcot.model import LoraSettings, apply_lora, load_thinker
    from lit_modules.checkpoint import adapter_state, write_adapter

    model = apply_lora(load_thinker("tiny"), LoraSettings(train_lm_head=True, dropout=0.0))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # LoRA B starts at zero: move every trainable weight so the merge matters
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    write_adapter(model, adapter_state(model), work / "adapter")
    return work / "adapter"


@pytest.fixture(scope="module")
def batch(work) -> dict:
    return _clip_batch(work)


@pytest.fixture(scope="module")
def want(adapter, batch) -> torch.Tensor:
    """Logits of the tiny base with the adapter attached (unmerged)."""
    from avcot.model import load_adapter, load_thinker

    return _logits(load_adapter(load_thinker("tiny"), str(adapter)), batch)


@pytest.fixture(scope="module")
def thinker_out(work, adapter) -> Path:
    out = work / "merged-thinker"
    assert main(["--base", "tiny", "--adapter", str(adapter), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def full_base(work) -> Path:
    """A tiny full Qwen2.5-Omni checkpoint (thinker = the tiny thinker, small talker + token2wav), sharded."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    from avcot.model import build_tiny_thinker, tiny_config
    from avcot.processor import load_processor

    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
    talker = dict(vocab_size=128, embedding_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, rope_parameters=rope)
    dit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, emb_dim=16, num_embeds=128,
               enc_emb_dim=16, enc_dim=16, enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8,
               enc_se_channels=8, look_ahead_layers=[1], look_backward_layers=[0])
    cfg = Qwen2_5OmniConfig(thinker_config=tiny_config().to_dict(), talker_config=talker,
                            token2wav_config=dict(dit_config=dit, bigvgan_config=dict(upsample_initial_channel=16)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        full = Qwen2_5OmniForConditionalGeneration(cfg)
    full.thinker.load_state_dict(build_tiny_thinker().state_dict())  # so the tiny adapter applies
    base = work / "full-base"
    full.save_pretrained(str(base), max_shard_size="1MB")
    load_processor("tiny").save_pretrained(str(base))
    torch.save({"Chelsie": {"cond": torch.ones(2)}}, base / "spk_dict.pt")  # the released checkpoints ship one
    return base


def test_merged_thinker_gives_the_adapter_logits_and_reloads_with_the_stock_class(thinker_out, adapter, batch, want):
    from safetensors import safe_open
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from avcot.model import load_thinker

    merged = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(str(thinker_out))
    got = _logits(merged, batch)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)
    assert (_logits(load_thinker("tiny"), batch) - want).abs().max() > 1e-2  # the adapter changes the output
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        head = f.get_tensor("base_model.model.lm_head.weight")
    assert torch.equal(merged.lm_head.weight, head)  # train_lm_head: the adapter's head copy is the head
    assert not list(thinker_out.parent.glob(f".{thinker_out.name}*"))  # no temporary directory left behind
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in thinker_out.iterdir()}


def test_eval_and_demo_loaders_take_the_exported_directory(thinker_out, batch, want):
    from avcot.eval.runner import ModelSpec, load_eval_model, processor_source
    from demo.runtime import load_model

    spec = ModelSpec(ckpt=str(thinker_out), device="cpu")
    torch.testing.assert_close(_logits(load_eval_model(spec), batch), want, atol=ATOL, rtol=ATOL)
    assert processor_source(spec) == str(thinker_out)
    loaded = load_model(base=str(thinker_out))
    assert loaded.adapter is None and loaded.processor.tokenizer is not None
    torch.testing.assert_close(_logits(loaded.model, batch), want, atol=ATOL, rtol=ATOL)


def test_vllm_layout_is_a_full_model_config_with_thinker_prefixed_weights(work, adapter, batch, want):
    from transformers import Qwen2_5OmniForConditionalGeneration

    from avcot.eval.runner import ModelSpec, load_eval_model

    report = export("tiny", str(adapter), work / "merged-vllm", layout="vllm", progress=False)
    cfg = json.loads((report.out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2_5OmniForConditionalGeneration"] and cfg["model_type"] == "qwen2_5_omni"
    assert cfg["enable_audio_output"] is False
    names = set(_tensors(report.out))
    assert len(names) == report.thinker_tensors and all(n.startswith("thinker.") for n in names)
    assert {"thinker.lm_head.weight", "thinker.model.embed_tokens.weight"} <= names  # vLLM's weight mapper
    stock = Qwen2_5OmniForConditionalGeneration.from_pretrained(str(report.out))
    assert stock.has_talker is False
    torch.testing.assert_close(_logits(stock.thinker, batch), want, atol=ATOL, rtol=ATOL)
    ours = load_eval_model(ModelSpec(ckpt=str(report.out), device="cpu"))
    torch.testing.assert_close(_logits(ours, batch), want, atol=ATOL, rtol=ATOL)


def test_full_layout_merges_the_thinker_and_carries_talker_and_token2wav_byte_for_byte(
        work, full_base, adapter, batch, want):
    from transformers import Qwen2_5OmniForConditionalGeneration

    report = export(str(full_base), str(adapter), work / "merged-full", progress=False)
    assert report.layout == "full" and report.carried_tensors > 0
    before, after = _tensors(full_base), _tensors(report.out)
    assert set(after) == set(before)
    carried = [n for n in before if not n.startswith("thinker.")]
    assert len(carried) == report.carried_tensors
    assert any(n.startswith("talker.") for n in carried) and any(n.startswith("token2wav.") for n in carried)
    for name in carried:
        assert after[name].dtype == before[name].dtype and after[name].shape == before[name].shape, name
        assert _bytes(after[name]) == _bytes(before[name]), name
    q = "thinker.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(after[q], before[q])  # merged
    for name in ("config.json", "spk_dict.pt"):
        assert (report.out / name).read_bytes() == (full_base / name).read_bytes(), name
    index = json.loads((report.out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(after)
    stock = Qwen2_5OmniForConditionalGeneration.from_pretrained(str(report.out))
    assert stock.has_talker
    torch.testing.assert_close(_logits(stock.thinker, batch), want, atol=ATOL, rtol=ATOL)


def test_full_finetuned_thinker_is_validated_and_resaved(work, full_base, batch):
    """A full fine-tuning run's `model-last/` (an HF thinker dir): re-saved alone, or into the full base."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from avcot.model import build_tiny_thinker

    tuned = build_tiny_thinker()
    with torch.no_grad():
        tuned.model.language_model.layers[1].mlp.down_proj.weight.mul_(1.5)
    tuned.save_pretrained(str(work / "model-last"))
    want = _logits(tuned, batch)
    alone = export(str(work / "model-last"), None, work / "ft-thinker", processor="tiny", progress=False)
    assert alone.layout == "thinker" and alone.adapter is None
    reloaded = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(str(alone.out))
    assert torch.equal(_logits(reloaded, batch), want)
    into_full = export(str(full_base), None, work / "ft-full", thinker=str(work / "model-last"), progress=False)
    after, before = _tensors(into_full.out), _tensors(full_base)
    name = "thinker.model.layers.1.mlp.down_proj.weight"
    assert torch.equal(after[name], before[name] * 1.5)
    assert all(_bytes(after[n]) == _bytes(before[n]) for n in before if n.startswith("talker."))


def test_merging_into_a_4bit_base_is_refused(adapter):
    from avcot.model import load_adapter, load_thinker

    nf4 = load_adapter(load_thinker("tiny", quantization="nf4"), str(adapter))
    assert quantization_of(nf4) == ("4-bit", "nf4") and quantization_of(load_thinker("tiny")) is None
    with pytest.raises(ExportError) as refused:
        merge_adapter(nf4)
    assert str(refused.value) == ("the base is loaded in 4-bit: merging into nf4 weights loses precision and is not "
                                  "supported; load the base in bfloat16: --dtype bfloat16")


def test_a_quantized_checkpoint_is_refused_before_loading(work, adapter, capsys):
    from avcot.model import load_thinker

    qdir = work / "nf4-base"
    load_thinker("tiny", quantization="nf4").save_pretrained(str(qdir))
    capsys.readouterr()  # drop save_pretrained's progress bar
    assert main(["--base", str(qdir), "--adapter", str(adapter), "--out", str(work / "q-out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(qdir) in err and "quantized checkpoint (bitsandbytes)" in err
    assert "--dtype bfloat16" in err and not (work / "q-out").exists()


def _pickle_adapter(work: Path, adapter: Path) -> Path:
    bad = work / "pickle-adapter"
    bad.mkdir(exist_ok=True)
    (bad / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())
    (bad / "adapter_model.bin").write_bytes(b"not read")
    return bad


@pytest.mark.parametrize("case, expect", [
    ("out-not-empty", "is not empty; pass --overwrite"),
    ("pickle-adapter", "missing adapter_model.safetensors (only safetensors adapters are merged); adapter_model.bin"),
    ("no-adapter-dir", "is not a directory"),
    ("model-as-adapter", "is a model directory (config.json, no adapter_config.json): for a full fine-tuned"),
    ("adapter-as-base", "is a LoRA adapter directory, not a model: pass it with --adapter"),
    ("full-layout-tiny", "the base is the embedded tiny thinker; use --layout thinker or --layout vllm"),
    ("out-is-base", "holds the input"),
])
def test_user_mistakes_end_with_one_line_naming_the_reason(work, adapter, thinker_out, case, expect, capsys):
    full = work / "busy"
    full.mkdir(exist_ok=True)
    (full / "keep.txt").write_text("x")
    args = {
        "out-not-empty": ["--adapter", str(adapter), "--out", str(full)],
        "pickle-adapter": ["--adapter", str(_pickle_adapter(work, adapter)), "--out", str(work / "x1")],
        "no-adapter-dir": ["--adapter", str(work / "nowhere"), "--out", str(work / "x2")],
        "model-as-adapter": ["--adapter", str(thinker_out), "--out", str(work / "x3")],
        "adapter-as-base": ["--base", str(adapter), "--out", str(work / "x4")],
        "full-layout-tiny": ["--adapter", str(adapter), "--layout", "full", "--out", str(work / "x5")],
        "out-is-base": ["--base", str(thinker_out), "--out", str(thinker_out), "--overwrite"],
    }[case]
    assert main(args + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expect in err
    assert (full / "keep.txt").is_file() and (thinker_out / "config.json").is_file()


def test_overwrite_replaces_a_non_empty_output_in_the_chosen_dtype(work, adapter):
    out = work / "replace-me"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    report = export("tiny", str(adapter), out, overwrite=True, dtype="bfloat16", progress=False)
    assert "stale.txt" not in report.files and (out / "model.safetensors").is_file()
    assert report.dtype == "bfloat16" and {t.dtype for t in _tensors(out).values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_help_shows_every_default():
    text = " ".join(build_parser().format_help().split())
    for default in ("(default: tiny)", "(default: auto)", "(default: 5GB)", "(default: 0)"):
        assert default in text, default


def test_thinker_and_vllm_layouts_from_a_full_base(work, full_base, adapter, batch, want):
    """A thinker loaded from a full checkpoint is saved back with `thinker.` names; the thinker layout drops them."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    thinker = export(str(full_base), str(adapter), work / "full-as-thinker", layout="thinker", progress=False)
    assert not any(n.startswith("thinker.") for n in _tensors(thinker.out))
    stock = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(str(thinker.out))
    torch.testing.assert_close(_logits(stock, batch), want, atol=ATOL, rtol=ATOL)
    vllm = export(str(full_base), str(adapter), work / "full-as-vllm", layout="vllm", progress=False)
    names = set(_tensors(vllm.out))
    assert all(n.startswith("thinker.") and not n.startswith("thinker.thinker.") for n in names)
    cfg, base_cfg = (json.loads((d / "config.json").read_text()) for d in (vllm.out, full_base))
    assert cfg["enable_audio_output"] is False and cfg["talker_config"]["hidden_size"] == 32
    assert base_cfg["talker_config"]["hidden_size"] == 32
