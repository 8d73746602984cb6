"""GRPO on the Qwen2.5-Omni thinker with audio-visual prompts (AVRT MCQ, CAVSR transcription).

One training step, for a batch of B left-padded prompts:
1. rollout (`avcot.rollout.RolloutEngine.sample`): each prompt's media are encoded and prefilled once, the KV
   cache is repeated G times and G completions are sampled (LoRA on, dropout off);
2. rewards: a weighted sum of reward functions named by dotted path (`avcot.rewards.*`), called TRL-style as
   `f(completions, references=..., answers=...)`: the batch's `avcot.rewards.RewardInputs`, each prompt's value
   repeated G times (never the model inputs); `avcot.grpo.group_advantages` normalises them per group;
3. reference log-probs (`avcot.reference`): by default the policy GRPO starts from. With an SFT adapter that is a
   frozen second copy of it (PEFT adapter "reference", made active for the reference forward only); without one,
   the base with the adapter disabled (a fresh LoRA is zero, and after a full SFT `base` is that model).
   `reference="base"` anchors to the base with the adapter disabled even after a LoRA SFT;
4. `num_iterations` policy updates (manual optimisation) of `avcot.grpo.grpo_loss` (clipped surrogate, eps 0.2,
   k3 KL, beta 0.01); with one iteration old_logp = logp.detach(), as TRL. The update forward takes the
   prompt's merged embeddings kept by the prefill, so the encoders run once per prompt per step.

Logged per step: each reward's mean and the weighted total, KL, clip fraction, completion length, lr, rollout
and update throughput; sample completions through the loggers (`lit_modules.sample_log`). `predict` generates
greedily, one `Generation` per row, written by the same `PredictionWriter` as SFT's.

Distributed. DDP: plain; Lightning prepares the reducer before every manual backward. FSDP2 (Lightning
`ModelParallelStrategy`): `configure_model` applies `fully_shard` to each decoder layer and to the whole
model (`lit_modules.sft.shard_model`). The rollout gathers every unit's parameters once for the whole rollout
(`avcot.rollout.gathered_for_generation`), then reshards them, and the decode loop stops only when every rank is
done so all ranks run the same number of forwards; the update forwards run through the sharded model's own forward.
The static-cache rollout (`static_rollout`) decodes inside the same gather; under FSDP2 its step runs eager (not
compiled: the gathered parameters get new storage at every rollout, which CUDA graphs would have to re-capture).
The frozen reference adapter is sharded with the rest and never reduced (it has no gradients).

Departures from the AVRT paper: none in the objective. Beyond it: several updates per batch and a token-level
loss reduction are options; the LoRA dropout is kept in the update forward (set `lora.dropout: 0` for an exact
ratio of 1 at the first update, which only matters with `num_iterations > 1`).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from avcot.batch import Batch
from avcot.completion_samples import completion_samples, samples_due
from avcot.grpo import (
    GrpoStats,
    LossType,
    clip_grad_norm,
    group_advantages,
    grpo_loss,
    merge_stats,
    microbatch_weight,
    token_logprobs,
)
from avcot.model import LoraSettings, apply_lora, freeze_encoders, load_adapter, load_thinker, lora_settings
from avcot.processor import load_processor
from avcot.reference import ReferenceKind, add_reference_adapter, describe_reference, reference_weights
from avcot.records import Generation
from avcot.rewards import RewardInputs, combine_rewards, format_valid_rate, resolve_reward
from avcot.rollout import (
    Rollout,
    RolloutEngine,
    RolloutSettings,
    completion_logits,
    decode,
    prompt_only,
    select_prompts,
)
from avcot.thinker.forward import unwrap_thinker
from lit_modules.checkpoint import AdapterSaver, keep_trainable_only, use_atomic_checkpoints
from lit_modules.export import TrainingSettingsSaver
from lit_modules.sample_log import write_samples
from lit_modules.sft import GenerationBatch, shard_model

DEFAULT_REWARDS = ("avcot.rewards.format_reward", "avcot.rewards.accuracy_reward")


class GRPOModule(L.LightningModule):
    """GRPO with LoRA on the Qwen2.5-Omni thinker; reference = the starting policy (or the base, as an option)."""

    def __init__(
        self,
        base: str = "tiny",
        adapter: str | None = None,
        lora: LoraSettings = LoraSettings(),
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        quantization: Literal["none", "nf4"] = "none",
        rewards: Sequence[str] = DEFAULT_REWARDS,
        reward_weights: Sequence[float] | None = None,
        group_size: int = 4,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        clip_eps: float = 0.2,
        beta: float = 0.01,
        loss_type: LossType = "grpo",
        num_iterations: int = 1,
        micro_batch_prompts: int = 1,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_grad_norm: float | None = 1.0,
        seed: int = 0,
        static_rollout: bool = False,
        reference: ReferenceKind = "start",
        log_samples_every_n_steps: int = 50,
    ) -> None:
        """
        Args:
            base: 'tiny' (embedded random test model) or a Qwen2.5-Omni checkpoint directory.
            adapter: SFT LoRA adapter directory to start from (trainable); None adds a fresh LoRA (`lora`).
            lora: settings of a fresh adapter: YAML `lora: {r: 8, alpha: 32, dropout: 0.05, target: attention}`,
                CLI `--model.init_args.lora.r 8` (the dropout is off while sampling; 0 gives a ratio of exactly 1).
            dtype: float32 | bfloat16 | float16 weights.
            quantization: none | nf4 (QLoRA base).
            rewards: dotted paths of reward functions `(completions, *, references, answers=None, **kw) ->
                list[float]` (`avcot.rewards`: what the keywords hold).
            reward_weights: one weight per reward (default all 1).
            group_size: completions sampled per prompt (G).
            max_new_tokens: longest completion.
            temperature: sampling temperature (also divides the logits of the loss, as TRL).
            clip_eps: PPO clip range epsilon.
            beta: weight of the k3 KL to the reference policy (`reference`); 0 skips the reference forward.
            loss_type: 'grpo' (per-sequence token mean, then mean) or 'token' (one mean over all tokens).
            num_iterations: policy updates per sampled batch (mu); 1 = on-policy.
            micro_batch_prompts: prompts (x G completions) per update forward; gradients accumulate.
            lr: AdamW learning rate.
            weight_decay: AdamW weight decay.
            warmup_steps: linear warm-up optimizer steps, constant after.
            max_grad_norm: gradient clipping norm (None: off).
            seed: seed of the tiny model / fresh LoRA init and of sampling (each rank adds its rank).
            static_rollout: decode with a static KV cache (compiled decode step on CUDA) instead of a growing
                one (`RolloutSettings.static`); same tokens for the same generator. Under FSDP2 the step runs eager
                inside the rollout's one parameter gather.
            reference: the policy the KL anchors to. 'start': the policy GRPO starts from (with `adapter`, a frozen
                copy of that SFT adapter; without, the base = the start); 'base': the base with the adapter disabled
                (after a LoRA SFT, the model before SFT).
            log_samples_every_n_steps: at the first step and then every this many optimizer steps, the step's
                completions (prompt id, completion, total reward) go to the loggers (TensorBoard: text
                `samples`; CSV: `samples.jsonl` beside metrics.csv; others: not written); 0 = never.
        """
        super().__init__()
        self.lora = lora_settings(lora)
        lora = asdict(self.lora)  # hparams hold plain data: checkpoints load with weights_only, as LightningCLI's do
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.reward_funcs = [resolve_reward(r) for r in rewards]
        weights = list(reward_weights) if reward_weights is not None else [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"{len(self.reward_funcs)} rewards but {len(weights)} reward_weights")
        self.reward_weights = weights
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 for group-normalised advantages, got {group_size}")
        if num_iterations < 1 or micro_batch_prompts < 1:
            raise ValueError("num_iterations and micro_batch_prompts must be >= 1")
        if log_samples_every_n_steps < 0:
            raise ValueError(f"log_samples_every_n_steps must be >= 0 (0 = off), got {log_samples_every_n_steps}")
        self._processor = None  # loaded on first use: building the module (e.g. --print_config) reads no files
        self.model = None
        self.strict_loading = False  # checkpoints carry only the trainable weights
        self._generator: torch.Generator | None = None
        self._engine: RolloutEngine | None = None

    @property
    def processor(self):
        """The processor of `base` (tokenizer for decoding completions and the eos/pad ids)."""
        if self._processor is None:
            self._processor = load_processor(self.hparams.base)
        return self._processor

    @property
    def eos_id(self) -> int:
        return self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")

    @property
    def pad_id(self) -> int:
        pad = self.processor.tokenizer.pad_token_id
        return pad if pad is not None else self.eos_id

    # ---- model -------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Build the thinker + LoRA (here so FSDP can shard it); shard when a device mesh is given."""
        if self.model is not None:
            return
        h = self.hparams
        with torch.random.fork_rng(devices=[]):  # identical LoRA init on every rank, whatever the global RNG
            torch.manual_seed(h.seed)
            model = load_thinker(h.base, dtype=h.dtype, quantization=h.quantization, seed=h.seed)
            if h.adapter:
                model = load_adapter(model, h.adapter, trainable=True)
            else:
                model = apply_lora(model, self.lora)
            if h.adapter and h.reference == "start":
                model = add_reference_adapter(model, h.adapter)
        rank_zero_info(describe_reference(h.base, h.adapter, h.reference))
        freeze_encoders(unwrap_thinker(model))
        if self.device_mesh is not None:
            shard_model(model, self.device_mesh)
        # A checkpoint loads in eval mode; the loss passes run in train mode (LoRA dropout on), as for `tiny`.
        self.model = model.train()

    def setup(self, stage: str) -> None:
        use_atomic_checkpoints(self.trainer)  # a crash mid-save never leaves a truncated .ckpt

    def configure_callbacks(self):
        # training_settings.json beside adapter-last: eval and the demo read the frames/size/seconds trained on
        return [AdapterSaver(), TrainingSettingsSaver()]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep_trainable_only(checkpoint, self)  # frozen base weights are rebuilt from `base` on resume

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warm = max(self.hparams.warmup_steps, 0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        return [opt], [sched]

    # ---- losses ------------------------------------------------------------------------------------------
    def policy_loss(self, logp: torch.Tensor, old_logp: torch.Tensor | None, ref_logp: torch.Tensor | None,
                    advantages: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, GrpoStats]:
        """The GRPO objective with this module's settings (clip, beta, reduction); [N, L] inputs, [N] adv."""
        h = self.hparams
        return grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps=h.clip_eps, beta=h.beta,
                         loss_type=h.loss_type)

    def completion_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """Per-token log-probs [R, N] of the sampled completions under the current model state."""
        logits = completion_logits(self.model, rollout, temperature=self.hparams.temperature)
        return token_logprobs(logits, rollout.completion_ids)

    @torch.no_grad()
    def reference_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """Per-token log-probs [R, N] under the reference policy (`avcot.reference.reference_weights`).

        Run in eval mode: the reference is a fixed policy, so no LoRA dropout on the frozen adapter's branch.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with reference_weights(self.model):
                return self.completion_logprobs(rollout)
        finally:
            self.model.train(was_training)
            freeze_encoders(unwrap_thinker(self.model))

    # ---- rewards -----------------------------------------------------------------------------------------
    def score(self, texts: list[str], inputs: RewardInputs) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """Weighted reward per completion [R] and each reward function's raw values."""
        total, per_func = combine_rewards(list(zip(self.reward_funcs, self.reward_weights)), texts, inputs)
        return torch.tensor(total, dtype=torch.float32), per_func

    # ---- training ----------------------------------------------------------------------------------------
    def training_step(self, batch: Batch | None, batch_idx: int) -> None:
        h = self.hparams
        if batch is None:  # every row of this batch was rejected (recorded in rejects.jsonl)
            return None
        num_prompts = len(batch)
        start = time.perf_counter()
        rollout = self._rollout(prompt_only(batch.inputs, self.pad_id))
        rollout_s = time.perf_counter() - start
        texts = decode(self.processor, rollout.completion_ids)
        rewards, per_func = self.score(texts, batch.reward_inputs(h.group_size))
        advantages = group_advantages(rewards, h.group_size).to(self.device)  # [R]
        lr = self.optimizers().param_groups[0]["lr"]  # the rate of this step's (first) update
        start = time.perf_counter()
        ref, old = self._frozen_logprobs(rollout, num_prompts)
        stats = [self._update(rollout, advantages, ref, old, num_prompts) for _ in range(h.num_iterations)]
        update_s = time.perf_counter() - start
        self._log_step(rewards, per_func, advantages, texts, rollout, stats[-1], rollout_s, update_s, lr)
        self._log_samples(batch.ids, texts, rewards)

    def rollout_settings(self, *, greedy: bool = False) -> RolloutSettings:
        """This module's sampling settings (greedy: one completion per prompt, for validation)."""
        h = self.hparams
        sampled = h.temperature > 0 and not greedy
        return RolloutSettings(max_new_tokens=h.max_new_tokens, group_size=1 if greedy else h.group_size,
                               do_sample=sampled, temperature=h.temperature if sampled else 1.0,
                               eos_token_id=self.eos_id, pad_token_id=self.pad_id, static=h.static_rollout)

    def _rollout(self, inputs: Mapping[str, Any], settings: RolloutSettings | None = None) -> Rollout:
        """Sample from left-padded model `inputs` with dropout off and the towers kept frozen; the generator is
        seeded per rank."""
        if self._generator is None:
            self._generator = torch.Generator(device=self.device).manual_seed(self.hparams.seed + self.global_rank)
        if self._engine is None:
            self._engine = RolloutEngine(self.model)
        was_training = self.model.training
        self.model.eval()  # no LoRA dropout while sampling
        try:
            return self._engine.sample(inputs, settings or self.rollout_settings(), generator=self._generator,
                                       sync_ranks=self.trainer.world_size > 1)
        finally:
            self.model.train(was_training)
            freeze_encoders(unwrap_thinker(self.model))

    def _chunks(self, num_prompts: int) -> list[tuple[slice, slice]]:
        """(prompt slice, completion-row slice) per update micro-batch."""
        g, m = self.hparams.group_size, self.hparams.micro_batch_prompts
        return [(slice(i, min(i + m, num_prompts)), slice(i * g, min(i + m, num_prompts) * g))
                for i in range(0, num_prompts, m)]

    @torch.no_grad()
    def _frozen_logprobs(self, rollout: Rollout, num_prompts: int):
        """Reference log-probs (beta > 0) and old policy log-probs (num_iterations > 1), per micro-batch."""
        h = self.hparams
        ref = old = None
        if h.beta != 0.0:
            ref = torch.cat([self.reference_logprobs(select_prompts(rollout, p))
                             for p, _ in self._chunks(num_prompts)])
        if h.num_iterations > 1:
            old = torch.cat([self.completion_logprobs(select_prompts(rollout, p))
                             for p, _ in self._chunks(num_prompts)])
        return ref, old

    def _update(self, rollout: Rollout, advantages, ref, old, num_prompts: int) -> GrpoStats:
        """One optimizer step over all completions, accumulating micro-batch gradients."""
        opt = self.optimizers()
        sched = self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        mask = rollout.completion_mask.float()  # [R, N]
        stats: list[tuple[GrpoStats, float]] = []
        for prompts, rows in self._chunks(num_prompts):
            part = select_prompts(rollout, prompts)
            logp = self.completion_logprobs(part)  # [r, N]
            loss, st = self.policy_loss(logp, None if old is None else old[rows], None if ref is None else ref[rows],
                                        advantages[rows], mask[rows])
            weight = microbatch_weight(mask, rows, self.hparams.loss_type)
            self.manual_backward(loss * weight)
            stats.append((st, weight))
        if self.hparams.max_grad_norm is not None:
            clip_grad_norm([p for p in self.model.parameters() if p.requires_grad], self.hparams.max_grad_norm)
        opt.step()
        sched.step()
        return merge_stats(stats)

    def _log_step(self, rewards, per_func, advantages, texts, rollout: Rollout, st: GrpoStats,
                  rollout_s: float, update_s: float, lr: float) -> None:
        h = self.hparams
        lengths = rollout.completion_mask.sum(1).float()  # [R]
        logs = {"reward/mean": rewards.mean(), "reward/std": rewards.std(),
                "advantage/std": advantages.float().std(), "kl": st.kl_mean, "clip_fraction": st.clip_fraction,
                "loss": st.loss, "policy_loss": st.policy_loss, "ratio/max": st.ratio_max,
                "completion/length": lengths.mean(), "completion/format_valid": format_valid_rate(texts, per_func),
                "tokens_per_s/rollout": rollout.num_tokens / max(rollout_s, 1e-9),
                "tokens_per_s/update": h.num_iterations * rollout.num_tokens / max(update_s, 1e-9),
                "lr": lr}
        for name, values in per_func.items():
            vals = torch.tensor(values)
            logs[f"reward/{name}/mean"] = vals.mean()
            logs[f"reward/{name}/std"] = vals.std()
        logs = {k: torch.as_tensor(v, dtype=torch.float32, device=self.device) for k, v in logs.items()}
        self.log_dict(logs, on_step=True, prog_bar=False, batch_size=len(texts), sync_dist=False)
        self.log("reward", logs["reward/mean"], prog_bar=True, batch_size=len(texts))

    def _log_samples(self, ids: Sequence[str], texts: list[str], rewards: torch.Tensor) -> None:
        """At the first step and then every `log_samples_every_n_steps` optimizer steps, this step's completions to
        the loggers (rank 0 only)."""
        h, step = self.hparams, self.global_step  # already counts this step's num_iterations updates
        if samples_due(step, h.num_iterations, h.log_samples_every_n_steps) and self.trainer.is_global_zero:
            samples = completion_samples(step, ids, texts, rewards.tolist(), h.group_size)
            write_samples(self.trainer.loggers, samples, step)

    def _greedy(self, batch: Batch) -> list[str]:
        """One greedy completion per row of `batch` (prompt-only, left-padded)."""
        rollout = self._rollout(prompt_only(batch.inputs, self.pad_id), self.rollout_settings(greedy=True))
        return decode(self.processor, rollout.completion_ids)

    def validation_step(self, batch: Batch | None, batch_idx: int) -> None:
        """Greedy completion per prompt, scored with the same rewards (logged as val/reward*)."""
        if batch is None:
            return None
        texts = self._greedy(batch)
        rewards, per_func = self.score(texts, batch.reward_inputs())
        self.log("val/reward", rewards.mean().to(self.device), batch_size=len(texts), sync_dist=True)
        for name, values in per_func.items():
            self.log(f"val/{name}", torch.tensor(values).mean().to(self.device), batch_size=len(texts), sync_dist=True)

    @torch.no_grad()
    def predict_step(self, batch: Batch | None, batch_idx: int, dataloader_idx: int = 0) -> GenerationBatch:
        """Greedy generation, one `Generation` per row (as SFT's predict): `extracted` is the answer letter of an
        MCQ batch, else the transcription."""
        if batch is None:
            return GenerationBatch(())
        from avcot.traces import extract_transcription, parse_answer

        extract = parse_answer if batch.answers is not None else extract_transcription
        return GenerationBatch(tuple(Generation(id=i, text=t, extracted=extract(t) or "")
                                     for i, t in zip(batch.ids, self._greedy(batch))))
