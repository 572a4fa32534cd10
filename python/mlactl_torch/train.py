"""The training loop of the torch engine: one process, or one of WORLD_SIZE processes under torchrun (DDP).

The orchestration is src/train/run.ts and the step is src/engine/tfjs/trainer.ts, event for event:
  - a step runs `grad_accum` micro-batches of the step's global batch (this rank's slice of it), averages the
    gradients, clips their global norm, and applies AdamW/Muon, then QK-clip for the qk-clip variant;
  - a step whose loss or gradient norm is not finite leaves the weights untouched and ends the run (`diverged`);
  - validation, checkpoints and max-logit passes come at the job's intervals and at the last step;
  - SIGINT/SIGTERM finish the current step, write a checkpoint and end the run as `interrupted`.

Dtype policy, in one place (`Precision`): parameters, gradients and optimizer state are float32 (master weights);
`bf16` runs the forward and backward passes under torch.autocast(bfloat16), RMSNorm statistics and the loss in
float32; `fp32` runs everything in float32 with TF32 off. Muon's Newton-Schulz runs in bf16 on CUDA, fp32 on the CPU.

Host synchronisation: one read per step (loss, gradient norm and, when computed, the per-head maxima), which the
divergence rule and QK-clip need before the update; nothing per parameter.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist

from . import __version__
from .checkpoint import CheckpointError, load_training_checkpoint, new_train_state, save_training_checkpoint
from .data import DataError, TokenStream, batch_hash, check_world_size, rank_slice, step_starts
from .events import Events
from .job import Job, JobError
from . import kernels
from .model import MLAForCausalLM, ModelSpec, compile_blocks, init_parameters, layer_max_logits, max_attention_logits
from .optim import Optimizer, apply_qk_clip, clip_by_global_norm_, heads_over, learning_rate, plan_qk_clip

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_DIVERGED = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------------------------
# Processes, devices, precision


@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @classmethod
    def from_env(cls) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        return cls(rank, world, int(os.environ.get("LOCAL_RANK", str(rank))), int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def pick_device(setting: str, d: Distributed) -> torch.device:
    cuda = torch.cuda.is_available()
    if setting == "cuda" and not cuda:
        raise JobError("config.engine.device: cuda was asked for, but torch sees no CUDA device")
    if setting == "cpu" or not cuda:
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if d.local_world_size > count:
        raise JobError(f"engine.gpus: {d.local_world_size} processes on this host but it has {count} CUDA device{'s' if count != 1 else ''}")
    return torch.device("cuda", d.local_rank)


class Precision:
    """The dtype policy: what autocast does, where TF32 is allowed, which dtype Newton-Schulz uses."""

    def __init__(self, setting: str, device: torch.device):
        self.name = ("bf16" if device.type == "cuda" else "fp32") if setting == "auto" else setting
        self.device_type = device.type
        if device.type == "cuda":
            tf32 = self.name == "bf16"  # fp32 means real fp32: parity runs must not round products to TF32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.newton_schulz_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def autocast(self):
        if self.name == "bf16":
            return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def choose_max_logit_pass(device: torch.device, precision: Precision, compile_model: bool, spec: ModelSpec):
    """
    The per-head max-logit pass (design note §6), separate from the fused attention: the Triton kernel for bf16 on
    CUDA when it passes its self-check (no score matrix in memory), else PyTorch's blocked pass, compiled where the
    model is (the mask then fuses into the max).
    """
    if precision.name == "bf16" and kernels.self_check(device, torch.bfloat16, spec.dn + spec.dr):
        def triton_pass(qk, scale):
            return torch.stack([kernels.max_attention_logits(q, k, scale) if kernels.supported(q) else max_attention_logits(q, k, scale) for q, k in qk])

        return triton_pass, "triton"
    return (torch.compile(layer_max_logits) if compile_model else layer_max_logits), "torch"


def spec_of(job: Job) -> ModelSpec:
    return ModelSpec(**job.spec)


def engine_info(device: torch.device, d: Distributed) -> dict:
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "engine": "torch",
        "engine_version": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": str(device),
        "gpu_names": names,
        "world_size": d.world_size,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------------
# The step


@dataclass
class StepResult:
    step: int  # optimizer steps taken after this one (1-based)
    lr: float
    train_loss: float
    grad_norm: float
    max_logit_heads: Optional[List[List[float]]]
    heads_clipped: int
    batch_hash: str
    stop_requested: bool

    @property
    def finite(self) -> bool:
        return math.isfinite(self.train_loss) and math.isfinite(self.grad_norm)


class Trainer:
    """The model, its optimizer and the data, and one method per thing the loop does (step, evaluate)."""

    def __init__(self, job: Job, d: Distributed, device: torch.device, precision: Precision, compile_model: bool):
        self.job, self.d, self.device, self.precision = job, d, device, precision
        self.spec = spec_of(job)
        self.train_cfg = job.train
        self.train_data = TokenStream(job.train_segments, "data.train")
        self.val_data = TokenStream(job.val_segments, "data.val")
        T = job.seq_len
        if len(self.train_data) < T + 1:
            raise DataError(f"data.train: the training split has {len(self.train_data)} tokens, fewer than data.seq_len + 1 = {T + 1}")
        for s in job.val_starts:
            if s + T + 1 > len(self.val_data):
                raise DataError(f"val_starts: window at {s} runs past the validation split's {len(self.val_data)} tokens")
        problem = check_world_size(self.train_cfg["batch_size"], self.train_cfg["grad_accum"], d.world_size)
        if problem:
            raise JobError(problem)

        self.model = MLAForCausalLM(self.spec).to(device)
        self.params = [p for _, p in self.model.named_parameters()]
        self.optimizer = Optimizer(self.model.named_parameters(), self.train_cfg, fused_adamw=device.type == "cuda", ns_dtype=precision.newton_schulz_dtype)
        self.forward_module = compile_blocks(self.model) if compile_model else self.model
        self.layer_max_logits, self.maxlogit_pass = choose_max_logit_pass(device, precision, compile_model, self.spec)
        self.train_module = self.forward_module
        self.stop_flag = False

    def wrap_distributed(self) -> None:
        """DDP after the weights are in place (it broadcasts rank 0's parameters at construction)."""
        if self.d.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_module = torch.nn.parallel.DistributedDataParallel(self.forward_module, device_ids=ids)

    def maxlogits_due(self, step: int) -> bool:
        """Per-head maxima for 1-based `step`: every step for qk-clip (it needs them), else at the log interval."""
        every = self.job.maxlogit_steps
        return self.spec.variant == "qk-clip" or step == 1 or step == self.job.total_steps or (every > 0 and step % every == 0)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def run_step(self, step: int) -> StepResult:
        """Optimizer step `step` (0-based): micro-batches, gradient mean, clip, update, QK-clip."""
        cfg, T, job = self.train_cfg, self.job.seq_len, self.job
        lr = learning_rate(step, job.total_steps, job.warmup_steps, cfg["lr"], cfg["min_lr_ratio"], cfg["schedule"], cfg["decay_fraction"])
        global_batch = step_starts(job.config["data"]["seed"], step, cfg["batch_size"], cfg["grad_accum"], T, len(self.train_data))
        chunks = rank_slice(global_batch, self.d.world_size, self.d.rank)
        track = self.maxlogits_due(step + 1)
        loss_sum = torch.zeros((), device=self.device)
        maxima = None
        for i, starts in enumerate(chunks):
            inputs, targets = (self._to_device(t) for t in self.train_data.windows(starts, T))
            last = i == len(chunks) - 1
            sync = self.train_module.no_sync() if self.d.active and not last else contextlib.nullcontext()
            with sync:
                with self.precision.autocast():
                    out = self.train_module(inputs, targets, float(cfg["z_loss"]), track)
                if track:
                    per_layer = self.layer_max_logits(out.qk, self.spec.scale)  # [L, H]
                    maxima = per_layer if maxima is None else torch.maximum(maxima, per_layer)
                    del out.qk[:]
                # Every chunk has the same token count, so the mean of chunk losses is the step's mean loss.
                (out.loss / len(chunks)).backward()
            loss_sum += out.loss.detach()
        loss = loss_sum / len(chunks)
        stop = torch.tensor(float(self.stop_flag), device=self.device)
        if self.d.active:
            # DDP averaged the gradients; the loss and the stop requests travel in one small all-reduce, so every
            # rank takes the same decisions below.
            packed = torch.stack([loss, stop])
            dist.all_reduce(packed)
            loss, stop = packed[0] / self.d.world_size, packed[1]
            if track:
                dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
        norm = clip_by_global_norm_([p.grad for p in self.params], float(cfg["grad_clip"]))
        train_loss, grad_norm, stops = torch.stack([loss.float(), norm.float(), stop]).tolist()  # the step's host read
        heads = maxima.tolist() if track else None
        clipped = 0
        if math.isfinite(train_loss) and math.isfinite(grad_norm):
            self.optimizer.step(lr)
            if self.spec.variant == "qk-clip":
                tau, alpha = float(cfg["qk_clip"]["tau"]), float(cfg["qk_clip"]["alpha"])
                per_layer = heads_over(heads, tau)
                clipped = sum(per_layer)
                if clipped:
                    apply_qk_clip(self.model, plan_qk_clip(self.spec, maxima, tau, alpha), [l for l, n in enumerate(per_layer) if n])
        for p in self.params:
            p.grad = None
        all_starts = [s for mb in global_batch for s in mb]
        return StepResult(step + 1, lr, train_loss, grad_norm, heads, clipped, batch_hash(all_starts), stops > 0)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean cross-entropy over the fixed validation windows (each rank scores every W-th window)."""
        T, B = self.job.seq_len, self.train_cfg["batch_size"]
        mine = self.job.val_starts[self.d.rank :: self.d.world_size]
        total = torch.zeros(2, dtype=torch.float64, device=self.device)  # [sum of window CE, windows]
        for i in range(0, len(mine), B):
            chunk = mine[i : i + B]
            inputs, targets = (self._to_device(t) for t in self.val_data.windows(chunk, T))
            with self.precision.autocast():
                ce = self.forward_module(inputs, targets).ce
            total += torch.stack([ce.double() * len(chunk), torch.tensor(float(len(chunk)), dtype=torch.float64, device=self.device)])
        if self.d.active:
            dist.all_reduce(total)
        s, n = total.tolist()
        return s / n if n else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# The run


def _due(step: int, every: int, total: int) -> bool:
    """An interval of 0 means only at the end of the run."""
    return step == total or (every > 0 and step % every == 0)


def _finite_or_none(x):
    return x if x is not None and math.isfinite(x) else None


def run(job: Job, events: Events) -> int:
    d = Distributed.from_env()
    device = pick_device(job.engine.device, d)
    if d.active:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _run(job, events, d, device)
    finally:
        if d.active and dist.is_initialized():
            dist.destroy_process_group()


def _run(job: Job, events: Events, d: Distributed, device: torch.device) -> int:
    precision = Precision(job.engine.precision, device)
    compile_setting = job.engine.compile
    compile_model = hasattr(torch, "compile") and (compile_setting is True or (compile_setting == "auto" and device.type == "cuda"))
    trainer = Trainer(job, d, device, precision, compile_model)

    if job.resume_from:
        state = load_training_checkpoint(job.resume_from, trainer.model, trainer.optimizer)
        if state.get("data_cursor", {}).get("seed", job.config["data"]["seed"]) != job.config["data"]["seed"]:
            raise CheckpointError(f"{job.resume_from}/state.json: data_cursor.seed differs from config.data.seed")
        state["schedule"] = {"step": state["step"], "total_steps": job.total_steps, "warmup_steps": job.warmup_steps}
    else:
        init_parameters(trainer.model, job.config["seed"])
        state = new_train_state(job.config["data"]["seed"], job.total_steps, job.warmup_steps)
    trainer.wrap_distributed()

    def on_signal(signum, frame):
        trainer.stop_flag = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    events.emit({"event": "ready", **engine_info(device, d), "precision": precision.name, "compile": compile_model, "maxlogit_pass": trainer.maxlogit_pass,
                 "parameters": sum(p.numel() for p in trainer.params), "start_step": state["step"], "total_steps": job.total_steps})

    def checkpoint() -> None:
        if d.is_main:
            folder = save_training_checkpoint(job.run_dir, trainer.model, trainer.optimizer, state, job.tokenizer)
            events.emit({"event": "checkpoint", "step": state["step"], "dir": folder})
        if d.active:
            dist.barrier()

    try:
        if not job.resume_from:
            checkpoint()  # the untrained model: evaluations compare against it
        total = job.total_steps
        last_step = total if job.stop_after_steps is None else min(total, job.stop_after_steps)
        t0 = time.time() - float(state["elapsed_s"])
        status = "completed"
        while state["step"] < last_step:
            r = trainer.run_step(state["step"])
            peak = max(max(row) for row in r.max_logit_heads) if r.max_logit_heads else None
            state.update(
                step=r.step, tokens=r.step * job.tokens_per_step, data_cursor={"seed": job.config["data"]["seed"], "step": r.step},
                schedule={**state["schedule"], "step": r.step}, elapsed_s=time.time() - t0,
                heads_clipped_total=state["heads_clipped_total"] + r.heads_clipped,
            )
            if peak is not None and math.isfinite(peak):
                state["max_logit_peak"] = peak if state["max_logit_peak"] is None else max(state["max_logit_peak"], peak)
            val = None
            if r.finite and job.val_starts and _due(r.step, job.eval_steps, total):
                val = trainer.evaluate()
                state["last_val_loss"] = _finite_or_none(val)
                if state["last_val_loss"] is not None:
                    best = state["best_val_loss"]
                    state["best_val_loss"] = val if best is None else min(best, val)
                events.emit({"event": "val", "step": r.step, "val_loss": val})
            events.emit({"event": "step", "step": r.step, "tokens": state["tokens"], "lr": r.lr, "train_loss": r.train_loss,
                         "grad_norm": r.grad_norm, "max_logit_heads": r.max_logit_heads, "heads_clipped": r.heads_clipped,
                         "batch_hash": r.batch_hash, "val_loss": val, "elapsed_s": state["elapsed_s"]})
            if not r.finite:
                status = "diverged"  # the bad step left the weights untouched; nothing is written from here
                break
            stop = r.stop_requested if d.active else trainer.stop_flag
            interrupted = stop or (r.step == last_step and last_step < total)
            if _due(r.step, job.ckpt_steps, total) or interrupted:
                checkpoint()
            if interrupted:
                status = "interrupted"
                break
        if status == "completed" and state["step"] < total:
            status = "interrupted"  # stop_after_steps at or below the start (0: initialise, write step 0 and stop)
        events.emit({"event": "done", "status": status, "step": state["step"]})
        return EXIT_DIVERGED if status == "diverged" else EXIT_OK
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
