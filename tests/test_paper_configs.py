"""Each paper-named config holds the papers' numbers, read through the real CLI (`--print_config`), so a config
that drifts from the paper fails here. The expected values are the papers' (copied by hand, with where they
come from), not the configs'; the effective batch is computed from per-device batch x accumulation x devices x
nodes, so the one written in a header cannot disagree with what runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import parsed_config


REPO = Path(__file__).resolve().parent.parent

# VASR paper, section 4.2: 16 GPUs, total batch 96, LoRA r 8 / alpha 32 / dropout 0.05, lr 1e-4, cosine,
# 3,000 warm-up steps, 3 epochs; audio and video interleaved in one stream (the authors' USE_AUDIO_IN_VIDEO=True).
VASR = {"finetune": "lora", "lora": (8, 32, 0.05), "lr": 1e-4, "warmup_steps": 3000, "max_epochs": 3,
        "effective_batch": 96, "precision": "bf16-mixed", "use_audio_in_video": True, "base": "Qwen/Qwen2.5-Omni-7B"}
# AVRT paper, SFT cold start: fully supervised fine-tuning of Qwen2.5-Omni-3B (towers frozen), lr 2e-6, AdamW
# betas 0.9/0.999 eps 1e-8 (tests/test_sft_full.py), weight decay 0.01, cosine, 100 warm-up steps, effective batch
# 32 = 1 x 8 accumulation x 4 GPUs, 1 epoch, bf16, DeepSpeed ZeRO-2 with CPU offload (here: FSDP2 + cpu_offload).
AVRT_SFT = {"finetune": "full", "lr": 2e-6, "weight_decay": 0.01, "warmup_steps": 100, "max_epochs": 1,
            "effective_batch": 32, "devices": 4, "precision": "bf16-mixed", "base": "Qwen/Qwen2.5-Omni-3B",
            "cpu_offload": True}
# AVRT paper, GRPO: from the SFT cold start (the 3B thinker avrt_3b_sft writes), G = 4 completions, PPO clip 0.2,
# KL beta 0.01, reward = format + accuracy.
AVRT_GRPO = {"group_size": 4, "clip_eps": 0.2, "beta": 0.01, "base": "runs/avrt_3b_sft/checkpoints/model-last",
             "adapter": None, "reference": "start", "temperature": 1.0,
             "rewards": ["avcot.rewards.format_reward", "avcot.rewards.accuracy_reward"]}

TABLE = [
    ("vasr_7b_lora", VASR),
    ("fsdp_7b", VASR),
    # one GPU and a 4-bit base (its header says so); the optimisation is the paper's
    ("qlora_7b_single_gpu", {**VASR, "quantization": "nf4"}),
    ("avrt_3b_sft", AVRT_SFT),
    # LoRA variant: the paper's schedule and batch; LoRA at the VASR paper's LoRA lr (its header says why)
    ("avrt_3b_sft_lora", {**{k: AVRT_SFT[k] for k in ("weight_decay", "warmup_steps", "max_epochs",
                                                      "effective_batch", "precision", "base")},
                          "finetune": "lora", "lora": (8, 32, 0.05), "lr": 1e-4}),
    ("avrt_3b_grpo", AVRT_GRPO),
]


def effective_batch(cfg: dict) -> int:
    """Per-device batch x accumulation x devices x nodes (devices must be a number, not 'auto')."""
    t = cfg["trainer"]
    devices, nodes = t["devices"], t.get("num_nodes") or 1
    assert isinstance(devices, int), f"devices must be a number for the batch to be known, got {devices!r}"
    return cfg["data"]["init_args"]["batch_size"] * (t.get("accumulate_grad_batches") or 1) * devices * nodes


FIELDS = {
    "finetune": lambda c: c["model"]["init_args"]["finetune"],
    "lora": lambda c: tuple(c["model"]["init_args"]["lora"][k] for k in ("r", "alpha", "dropout")),
    "lr": lambda c: c["model"]["init_args"]["lr"],
    "weight_decay": lambda c: c["model"]["init_args"]["weight_decay"],
    "warmup_steps": lambda c: c["model"]["init_args"]["warmup_steps"],
    "cpu_offload": lambda c: c["model"]["init_args"]["cpu_offload"],
    "quantization": lambda c: c["model"]["init_args"]["quantization"],
    "base": lambda c: c["model"]["init_args"]["base"],
    "group_size": lambda c: c["model"]["init_args"]["group_size"],
    "clip_eps": lambda c: c["model"]["init_args"]["clip_eps"],
    "beta": lambda c: c["model"]["init_args"]["beta"],
    "temperature": lambda c: c["model"]["init_args"]["temperature"],
    "adapter": lambda c: c["model"]["init_args"]["adapter"],
    "reference": lambda c: c["model"]["init_args"]["reference"],
    "rewards": lambda c: list(c["model"]["init_args"]["rewards"]),
    "max_epochs": lambda c: c["trainer"]["max_epochs"],
    "precision": lambda c: c["trainer"]["precision"],
    "devices": lambda c: c["trainer"]["devices"],
    "effective_batch": effective_batch,
    "use_audio_in_video": lambda c: c["data"]["init_args"]["use_audio_in_video"],
}


@pytest.mark.parametrize(("name", "paper"), TABLE, ids=[n for n, _ in TABLE])
def test_config_holds_the_papers_numbers(name, paper):
    cfg = parsed_config(name)
    got = {key: FIELDS[key](cfg) for key in paper}
    drift = {key: (got[key], want) for key, want in paper.items() if got[key] != want}
    assert not drift, f"configs/{name}.yaml departs from the paper (config, paper): {drift}"


@pytest.mark.parametrize("name", ["fsdp_7b", "avrt_3b_sft"])
def test_fsdp2_mesh_covers_every_process(name):
    """ModelParallelStrategy needs data_parallel_size x tensor_parallel_size = world size ('auto' data
    parallelism is the node count, which is wrong on a multi-GPU node)."""
    cfg = parsed_config(name)
    t = cfg["trainer"]
    mesh = t["strategy"]["init_args"]
    assert t["strategy"]["class_path"].endswith("ModelParallelStrategy")
    assert mesh["data_parallel_size"] * mesh["tensor_parallel_size"] == t["devices"] * (t.get("num_nodes") or 1)


@pytest.mark.parametrize("name", [n for n, _ in TABLE])
def test_header_starts_with_the_command_and_states_the_batch(name):
    """The first line runs the config; the header spells out the effective batch the test computes."""
    lines = (REPO / "configs" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == f"# python -m avcot.cli fit --config configs/{name}.yaml"
    if "effective_batch" in dict(TABLE)[name]:
        header = " ".join(line for line in lines if line.startswith("#"))
        assert str(effective_batch(parsed_config(name))) in header
