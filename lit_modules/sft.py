"""Supervised fine-tuning of the Qwen2.5-Omni thinker: LoRA / QLoRA, or full fine-tuning of its language model.

`finetune="lora"` (the VASR paper): LoRA on the language model (`lora` settings), everything else frozen.
`finetune="full"` (the AVRT paper's "fully supervised fine-tuning"): the language model trains (the LM head
with `lora.train_lm_head`), the audio and vision towers stay frozen (`train_towers` trains them, for random-init
models only); weights are kept in fp32 (master copy; compute in bf16 through the trainer's
`precision: bf16-mixed`), because lr 2e-6 updates are below bf16's resolution of the weights.

The model is built in `configure_model`, so sharding strategies see it before it is materialised:
under Lightning's `ModelParallelStrategy` (FSDP2) each decoder layer and then the whole model are
`fully_shard`-ed over the data-parallel mesh, with `cpu_offload` keeping parameters, gradients and AdamW
state in host memory (FSDP2's `CPUOffloadPolicy`); DDP and single-device need nothing special.

Batches are `avcot.batch.Batch` records (the model's tensors in `inputs`, row ids, references). Loss is the
thinker's own cross-entropy over `inputs["labels"]` (-100 everywhere except the assistant
turn), so it falls on the target tokens only. AdamW (betas 0.9/0.999, eps 1e-8: torch's defaults, the
AVRT paper's values) sees trainable parameters only; the schedule is linear warm-up then cosine decay to
zero over `trainer.estimated_stepping_batches`.

Checkpoints hold only the trainable weights + optimizer/scheduler state (frozen base weights are
dropped in `on_save_checkpoint` and rebuilt from `base` on resume; `strict_loading = False`). Beside each
one (`configure_callbacks`): LoRA runs write PEFT adapter dirs (`AdapterSaver`), full runs a loadable HF
thinker dir `model-last/` (`lit_modules.export.FullModelSaver`), and both `training_settings.json` (the
DataModule's frames / frame size / seconds / audio-in-video / target, which `avcot.eval` reads).

Departures from the papers' setups (their numbers are in the configs, held by tests/test_paper_configs.py):
- HF's gradient checkpointing is not used because it backprops through the frozen encoders
  (`lm_checkpointing` checkpoints the decoder layers only instead).
- VASR: the paper names no LoRA target modules; `lora.target: attention` (q/k/v/o of the LM) is used, the
  authors' training script uses all linear layers (`lora.target: all-linear` comes closest: the LM's linear
  layers, never the towers').
- AVRT: DeepSpeed ZeRO-2 with CPU offload becomes FSDP2 (which also shards the parameters, ZeRO-3 style)
  with `cpu_offload`; the effective batch and every optimiser number are the paper's.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from avcot.batch import Batch
from avcot.chat import model_inputs
from avcot.model import LoraSettings, lora_settings
from avcot.records import Generation
from lit_modules.checkpoint import AdapterSaver, keep_trainable_only, use_atomic_checkpoints
from lit_modules.export import FullModelSaver, TrainingSettingsSaver

Finetune = Literal["lora", "full"]


class GenerationBatch:
    """The `Generation`s of one predict batch, iterable like a list.

    Not a list/tuple on purpose: Lightning moves predict outputs to CPU with `apply_to_collection`,
    which recurses into sequences and refuses frozen dataclasses; an opaque container passes through.
    """

    def __init__(self, items: tuple[Generation, ...]):
        self.items = tuple(items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"GenerationBatch({list(self.items)!r})"


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear 0->1 over warmup_steps, then cosine 1->0 by total_steps (clamped at 0)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def check_finetune(finetune: str, *, adapter: str | None, quantization: str, dtype: str) -> None:
    """Refuse settings that cannot go with `finetune` (ValueError naming the argument to change)."""
    if finetune not in ("lora", "full"):
        raise ValueError(f"finetune must be 'lora' or 'full', got {finetune!r}")
    if finetune != "full":
        return
    if adapter:
        raise ValueError("finetune: full trains the base weights; `adapter` is for finetune: lora (to start a full "
                         "run from merged weights, point `base` at them)")
    if quantization != "none":
        raise ValueError("finetune: full cannot train a 4-bit base; set quantization: none")
    if dtype != "float32":
        raise ValueError(f"finetune: full keeps fp32 master weights (small-lr updates vanish in {dtype}); set "
                         "dtype: float32 and compute in bf16 with the trainer's precision: bf16-mixed")


def check_train_towers(train_towers: bool | str, *, finetune: str, encoder_cache_dir: str | None) -> None:
    """Refuse `train_towers` with settings that would leave the towers untrained (ValueError naming them)."""
    from avcot.model import trained_towers

    if not trained_towers(train_towers):
        return
    if finetune != "full":
        raise ValueError("train_towers trains the towers' own weights: set finetune: full")
    if encoder_cache_dir:
        raise ValueError("train_towers needs encoder_cache_dir: null (cached tower outputs carry no gradient, "
                         "so the towers would never learn)")


class SFTModule(L.LightningModule):
    """SFT of the thinker: LoRA on the language model, or the whole language model (towers frozen either way)."""

    def __init__(
        self,
        base: str = "tiny",
        adapter: str | None = None,
        finetune: Finetune = "lora",
        lora: LoraSettings = LoraSettings(),
        cpu_offload: bool = False,
        quantization: Literal["none", "nf4"] = "none",
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        seed: int = 0,
        max_new_tokens: int = 256,
        fast_loss: bool = False,
        lm_checkpointing: bool = False,
        encoder_cache_dir: str | None = None,
        train_towers: bool | Literal["audio", "vision"] = False,
    ):
        """
        Args:
            base: "tiny" (embedded random-init model) or a Qwen2.5-Omni checkpoint directory.
            adapter: Optional PEFT adapter directory to continue training from (its LoRA settings win; LoRA only).
            finetune: "lora" (adapter on the language model) or "full" (the language model's own weights; the LM
                head with `lora.train_lm_head`; needs dtype float32, no quantization, no adapter).
            lora: LoRA settings (rank, alpha, dropout, target modules, LM head): YAML `lora: {r: 8, alpha: 32,
                dropout: 0.05, target: attention}`, CLI `--model.init_args.lora.r 8`. With finetune "full" only
                `train_lm_head` is read.
            cpu_offload: FSDP2 only (`ModelParallelStrategy`): keep the sharded parameters, gradients and AdamW
                state in host memory (the closest analogue of DeepSpeed ZeRO-2 + CPU offload).
            quantization: "none" or "nf4" (QLoRA: the base is loaded in 4-bit with bitsandbytes).
            dtype: Weight dtype of the base model.
            lr: Peak AdamW learning rate.
            weight_decay: AdamW weight decay (on the trainable weights).
            warmup_steps: Linear warm-up steps before the cosine decay.
            seed: Seed of the tiny model's init and the LoRA init.
            max_new_tokens: Generation length for predict.
            fast_loss: Apply the LM head and cross-entropy at labelled positions only (same loss, far less
                memory with a 152k vocabulary).
            lm_checkpointing: Activation checkpointing on the language-model decoder layers only (the frozen
                towers run under no_grad, never checkpointed).
            encoder_cache_dir: Directory of an on-disk cache of frozen audio/vision tower outputs keyed by media
                hash + tower fingerprint, reused across epochs; None disables it. A relative path is taken
                under the trainer's default_root_dir, so the cache moves with the run's other outputs.
            train_towers: Train the audio and vision towers too (finetune "full" only); "audio" or "vision" trains
                that tower alone. Exists for random-init models (base "tiny", e.g. bench/learn_cavsr.py): towers
                never pretrained cannot learn to hear or read while frozen; "audio" keeps a vision tower that a
                reading pre-training (bench/learn_read.py) taught to read as it is. Both papers freeze their
                pretrained towers: leave it off for real checkpoints. Needs encoder_cache_dir off (cached outputs
                carry no gradient); with fast_loss the towers run with gradients in the fast path.
        """
        super().__init__()
        check_finetune(finetune, adapter=adapter, quantization=quantization, dtype=dtype)
        check_train_towers(train_towers, finetune=finetune, encoder_cache_dir=encoder_cache_dir)
        self.lora = lora_settings(lora)
        lora = asdict(self.lora)  # hparams hold plain data: checkpoints load with weights_only, as LightningCLI's do
        self.save_hyperparameters()
        self.model = None
        self.strict_loading = False  # checkpoints carry only the trainable weights
        self._last_step_time: float | None = None
        self.encoder_cache = None
        self._told_hash_media = False

    # -- model ---------------------------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.model is not None:
            return
        from avcot.model import apply_lora, load_adapter, load_thinker, train_language_model

        hp = self.hparams
        sharded = getattr(self, "device_mesh", None) is not None
        if sharded and (hp.fast_loss or hp.encoder_cache_dir):
            # Both call the thinker's parts directly; FSDP2 gathers the root's weights (and finalises the
            # gradient reduce-scatters) only when a forward runs through the root module.
            raise ValueError("fast_loss and encoder_cache_dir are for one device or DDP; with FSDP2 "
                             "(ModelParallelStrategy) set them off (lm_checkpointing works there)")
        if hp.cpu_offload and not sharded:
            raise ValueError("cpu_offload is FSDP2's CPUOffloadPolicy: use it with the ModelParallelStrategy "
                             "(see configs/avrt_3b_sft.yaml), or set cpu_offload: false")
        with torch.random.fork_rng(devices=[]):  # LoRA init independent of the global RNG state
            torch.manual_seed(hp.seed)
            model = load_thinker(hp.base, dtype=hp.dtype, quantization=hp.quantization, seed=hp.seed)
            if hp.finetune == "full":
                train_language_model(model, train_lm_head=self.lora.train_lm_head)
                if hp.train_towers:
                    from avcot.model import train_encoders, trained_towers

                    train_encoders(model, trained_towers(hp.train_towers))
            elif hp.adapter:
                model = load_adapter(model, hp.adapter, trainable=True)
            else:
                model = apply_lora(model, self.lora)
        if hp.lm_checkpointing:
            from avcot.thinker.checkpointing import enable_lm_checkpointing

            enable_lm_checkpointing(model)
        if hp.encoder_cache_dir:
            from avcot.thinker.encoder_cache import EncoderCache

            self.encoder_cache = EncoderCache(self._run_path(hp.encoder_cache_dir), model)
        if sharded:
            if hp.cpu_offload:
                _refuse_offload_backend(self.device_mesh.device_type)
            shard_model(model, self.device_mesh, cpu_offload=hp.cpu_offload)
        # from_pretrained returns a model in eval mode (the embedded tiny one is built in train mode) and Lightning
        # does not switch submodules: without this, a real checkpoint would train with LoRA dropout off.
        self.model = model.train()

    def setup(self, stage: str) -> None:
        use_atomic_checkpoints(self.trainer)  # a crash mid-save never leaves a truncated .ckpt

    def configure_callbacks(self):
        saver = FullModelSaver() if self.hparams.finetune == "full" else AdapterSaver()
        return [saver, TrainingSettingsSaver()]

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("no trainable parameters: neither LoRA nor full fine-tuning was set up")
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = self.hparams.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warm, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- steps ---------------------------------------------------------------------------------------------

    def forward(self, batch: Batch):
        return self.model(**model_inputs(batch.inputs))

    def _run_path(self, path: str) -> Path:
        """`path`, or `<default_root_dir>/path` when it is relative and a trainer is attached."""
        p = Path(path).expanduser()
        if p.is_absolute() or self._trainer is None:
            return p
        return Path(self._trainer.default_root_dir) / p

    def _loss(self, batch: Batch, split: str):
        loss = self._compute_loss(batch)
        n = len(batch)
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=n, sync_dist=split != "train")
        return loss

    def _compute_loss(self, batch: Batch) -> torch.Tensor:
        """The thinker's loss on the target tokens, through the speed levers when they are on."""
        if not (self.hparams.fast_loss or self.encoder_cache is not None):
            return self(batch).loss
        from avcot.thinker.label_loss import sft_loss

        feats = None
        if self.encoder_cache is not None:  # keys from the collate when the DataModule hashed them, else here
            keys = batch.media_keys
            if keys is None and not self._told_hash_media:
                self._told_hash_media = True
                rank_zero_info("encoder cache: media keys are hashed in the training step; the DataModule's "
                               "hash_media: true hashes them in the DataLoader workers instead")
            feats = self.encoder_cache.features(self.model, batch.inputs, keys)
        return sft_loss(self.model, batch.inputs, feats, towers_grad=bool(self.hparams.train_towers))

    def training_step(self, batch: Batch | None, batch_idx: int):
        if batch is None:  # every row of the batch was rejected (skip mode)
            return None
        loss = self._loss(batch, "train")
        self._log_throughput(batch)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
        return loss

    def validation_step(self, batch: Batch | None, batch_idx: int):
        return None if batch is None else self._loss(batch, "val")

    def test_step(self, batch: Batch | None, batch_idx: int):
        return None if batch is None else self._loss(batch, "test")

    def _log_throughput(self, batch: Batch) -> None:
        """train/target_tokens_per_s: the batch's target tokens (labels != -100, so no pads) per second of the
        step; train/tokens_per_s: its non-pad input tokens (attention mask) per second. A step's time runs from
        the previous step's log to this one, so the first step of each epoch is not counted."""
        now = time.perf_counter()
        if self._last_step_time is not None:
            dt = max(now - self._last_step_time, 1e-9)
            target = int((batch.inputs["labels"] != -100).sum())
            total = int(batch.inputs["attention_mask"].sum())
            self.log("train/target_tokens_per_s", target / dt, batch_size=1)
            self.log("train/tokens_per_s", total / dt, batch_size=1)
        self._last_step_time = now

    def on_train_epoch_start(self) -> None:
        self._last_step_time = None  # do not count validation/epoch boundaries as step time

    @torch.no_grad()
    def predict_step(self, batch: Batch | None, batch_idx: int, dataloader_idx: int = 0) -> GenerationBatch:
        """Greedy generation for a left-padded batch without targets -> one `Generation` per row."""
        if batch is None:
            return GenerationBatch(())
        from avcot.processor import load_processor
        from avcot.rollout import generate_texts
        from avcot.traces import extract_transcription

        if getattr(self, "_processor", None) is None:
            self._processor = load_processor(self.hparams.base)
        texts = generate_texts(self.model, self._processor, batch.inputs, max_new_tokens=self.hparams.max_new_tokens)
        return GenerationBatch(tuple(Generation(id=i, text=t, extracted=extract_transcription(t))
                                     for i, t in zip(batch.ids, texts)))

    # -- checkpoints ---------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep_trainable_only(checkpoint, self)


def offload_backend_problem(device_type: str, backend: str) -> str | None:
    """Why FSDP2 CPU offload on `device_type` cannot run over process-group `backend`, or None.

    Offloaded gradients are DTensors in host memory: their norm (gradient clipping) is reduced across ranks
    there, which needs a CPU collective backend beside the accelerator's (e.g. "cuda:nccl,cpu:gloo").
    """
    if device_type == "cpu" or backend == "gloo" or "cpu:" in backend:
        return None
    return (f"cpu_offload keeps gradients in host memory and reduces their norm there, but the process group "
            f"backend {backend!r} has no CPU backend: set the ModelParallelStrategy's process_group_backend: "
            f"cuda:nccl,cpu:gloo (see configs/avrt_3b_sft.yaml)")


def _refuse_offload_backend(device_type: str) -> None:
    import torch.distributed as dist

    problem = offload_backend_problem(device_type, str(dist.get_backend()))
    if problem is not None:
        raise ValueError(problem)


def shard_model(model, mesh, *, cpu_offload: bool = False) -> None:
    """FSDP2: shard each language-model decoder layer, then the rest, over the data-parallel mesh.

    `cpu_offload`: the shards (and so their gradients and the optimizer state) live in host memory and are
    copied to the device for each unit's forward/backward. On an accelerator the shards are pinned, which
    also makes FSDP2 put them back on the host after Lightning's `model.to(device)`; a CPU mesh cannot pin.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    from avcot.thinker.forward import unwrap_thinker

    dp = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
    policy = CPUOffloadPolicy(pin_memory=dp.device_type != "cpu") if cpu_offload else OffloadPolicy()
    for layer in unwrap_thinker(model).model.language_model.layers:
        fully_shard(layer, mesh=dp, offload_policy=policy)
    fully_shard(model, mesh=dp, offload_policy=policy)
