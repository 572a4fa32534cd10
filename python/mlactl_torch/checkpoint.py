"""Checkpoint folders in format `mlactl-mla/1` (docs/checkpoint-format.md), readable and writable by both engines.

    ckpt/step-N/            model.safetensors, config.json, optimizer.safetensors, state.json
    ckpt/.step-N.partial/   a checkpoint being written; renamed to step-N once its four files are complete

Loading is strict: a tensor missing, extra or of another shape is refused with a one-line CheckpointError, and so
is a config.json that describes another model. Only rank 0 calls the writers (train.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Optional

import torch

from .model import MLAForCausalLM, ModelSpec
from .optim import Optimizer, StateError
from .safetensors_io import SafetensorsError, first_mismatch, read_header, read_into, read_safetensors, write_safetensors

CHECKPOINT_FORMAT = "mlactl-mla/1"
CKPT_DIR = "ckpt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for this model (message is one line naming the file and key)."""


def checkpoint_config(spec: ModelSpec, tokenizer: Optional[dict]) -> dict:
    """config.json, key for key as `checkpointConfig` in src/runfolder/checkpoint.ts."""
    return {
        "model_type": "mlactl-mla",
        "format": CHECKPOINT_FORMAT,
        "vocab_size": spec.vocab,
        "hidden_size": spec.d,
        "num_hidden_layers": spec.L,
        "num_attention_heads": spec.H,
        "q_lora_rank": spec.dq if spec.dq > 0 else None,
        "kv_lora_rank": spec.dc,
        "qk_nope_head_dim": spec.dn,
        "qk_rope_head_dim": spec.dr,
        "v_head_dim": spec.dv,
        "intermediate_size": spec.dff,
        "hidden_act": "silu",
        "rope_theta": spec.rope_theta,
        "rope_layout": "adjacent-pairs",
        "rms_norm_eps": spec.norm_eps,
        "max_position_embeddings": spec.max_seq_len,
        "tie_word_embeddings": spec.tied,
        "attention_scale": "1/sqrt(qk_nope_head_dim + qk_rope_head_dim)",
        "variant": spec.variant,
        "qk_norm": {"scope": spec.scope, "key_groups": spec.G, "eps": spec.qk_eps, "applied": "before-rope"} if spec.variant == "qk-norm" else None,
        "tokenizer": tokenizer,
        "initializer_range": spec.init_std,
    }


def spec_from_checkpoint_config(c: dict) -> ModelSpec:
    qk = c.get("qk_norm") or {}
    return ModelSpec(
        variant=c["variant"], vocab=c["vocab_size"], d=c["hidden_size"], L=c["num_hidden_layers"], H=c["num_attention_heads"],
        dq=c.get("q_lora_rank") or 0, dc=c["kv_lora_rank"], dn=c["qk_nope_head_dim"], dr=c["qk_rope_head_dim"], dv=c["v_head_dim"],
        dff=c["intermediate_size"], G=qk.get("key_groups", c["num_attention_heads"]), scope=qk.get("scope", "full"), qk_eps=qk.get("eps", 1e-6),
        norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"], max_seq_len=c["max_position_embeddings"], tied=c["tie_word_embeddings"],
        init_std=c.get("initializer_range", 0.02),
    )


def read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found (not a model checkpoint folder)") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict) or config.get("model_type") != "mlactl-mla":
        raise CheckpointError(f"{path}: model_type must be mlactl-mla")
    return config


# ---------------------------------------------------------------------------------------------------------------
# Atomic files and folders


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str, value) -> None:
    """JSON with a trailing newline, written to a temporary name, fsynced and renamed into place."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(value, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _test_pause() -> None:
    """Test hook (as MLACTL_TEST_CKPT_PAUSE_MS in the tfjs engine): pause between files so a test can kill mid-write."""
    ms = float(os.environ.get("MLACTL_TEST_CKPT_PAUSE_MS", "0") or 0)
    if ms > 0:
        time.sleep(ms / 1000)


# ---------------------------------------------------------------------------------------------------------------
# Model folders


def save_model(folder: str, model: MLAForCausalLM, tokenizer: Optional[dict]) -> None:
    """model.safetensors (float32, checkpoint names) and config.json."""
    os.makedirs(folder, exist_ok=True)
    tensors = {name: p.detach().float() for name, p in model.named_parameters()}
    write_safetensors(os.path.join(folder, "model.safetensors"), tensors, {"format": CHECKPOINT_FORMAT})
    write_json(os.path.join(folder, "config.json"), checkpoint_config(model.spec, tokenizer))


def check_config_matches(folder: str, spec: ModelSpec) -> dict:
    """The folder's config.json must describe `spec` (tokenizer and init std aside)."""
    config = read_config(folder)
    expected = checkpoint_config(spec, None)
    for key, value in expected.items():
        if key in ("tokenizer", "initializer_range", "attention_scale"):
            continue
        if config.get(key) != value:
            raise CheckpointError(f"{os.path.join(folder, 'config.json')}: {key} is {json.dumps(config.get(key))}, the run's model has {json.dumps(value)}")
    return config


@torch.no_grad()
def load_model_weights(folder: str, model: MLAForCausalLM) -> None:
    """
    Copy model.safetensors into the model's parameters: exactly its tensors, each of its shape, float32. The header
    is checked against the model before any parameter changes; then the file is read straight into the parameters,
    wherever they live (`read_into`: no second copy of the weights in host memory).
    """
    path = os.path.join(folder, "model.safetensors")
    try:
        entries, _, data_start = read_header(path)
        params = dict(model.named_parameters())
        problem = first_mismatch(path, {n: tuple(p.shape) for n, p in params.items()}, {n: e["shape"] for n, e in entries.items()}, "checkpoint of another model?")
        if problem:
            raise CheckpointError(problem)
        for name in params:
            if entries[name]["dtype"] != "F32":
                raise CheckpointError(f"{path}: tensor {name} must be F32")
        read_into(path, entries, data_start, params)
    except SafetensorsError as e:
        raise CheckpointError(str(e)) from None


# ---------------------------------------------------------------------------------------------------------------
# Training checkpoints


def new_train_state(seed: int, total_steps: int, warmup_steps: int) -> dict:
    """state.json of a run that has taken no step (keys in the order of TrainState, src/runfolder/training-checkpoint.ts)."""
    return {
        "step": 0,
        "tokens": 0,
        "data_cursor": {"seed": seed, "step": 0},
        "schedule": {"step": 0, "total_steps": total_steps, "warmup_steps": warmup_steps},
        "elapsed_s": 0,
        "best_val_loss": None,
        "last_val_loss": None,
        "heads_clipped_total": 0,
        "max_logit_peak": None,
    }


def save_training_checkpoint(run_dir: str, model: MLAForCausalLM, optimizer: Optimizer, state: dict, tokenizer: Optional[dict]) -> str:
    """Write ckpt/.step-N.partial (each file fsynced), then rename it to ckpt/step-N. Returns the final folder."""
    root = os.path.join(run_dir, CKPT_DIR)
    final = os.path.join(root, f"step-{state['step']}")
    partial = os.path.join(root, f".step-{state['step']}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    save_model(partial, model, tokenizer)
    _test_pause()
    write_safetensors(os.path.join(partial, "optimizer.safetensors"), optimizer.state_tensors(), {"optimizer": optimizer.train["optimizer"]})
    write_json(os.path.join(partial, "state.json"), state)
    _fsync_dir(partial)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(partial, final)
    _fsync_dir(root)
    return final


def latest_checkpoint(run_dir: str) -> Optional[str]:
    """The newest complete ckpt/step-N of a run (one with state.json), or None."""
    root = os.path.join(run_dir, CKPT_DIR)
    if not os.path.isdir(root):
        return None
    steps = [int(m.group(1)) for m in (re.fullmatch(r"step-(\d+)", n) for n in os.listdir(root)) if m and os.path.isfile(os.path.join(root, m.group(0), "state.json"))]
    return os.path.join(root, f"step-{max(steps)}") if steps else None


def load_training_checkpoint(folder: str, model: MLAForCausalLM, optimizer: Optimizer, use_package: bool = True) -> dict:
    """Restore weights and optimizer state bit-exactly; returns state.json. Each file is checked before it is used."""
    check_config_matches(folder, model.spec)
    opt_path = os.path.join(folder, "optimizer.safetensors")
    try:
        record, _ = read_safetensors(opt_path, use_package)
    except SafetensorsError as e:
        raise CheckpointError(str(e)) from None
    state_path = os.path.join(folder, "state.json")
    try:
        with open(state_path) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{state_path}: unreadable ({e})") from None
    for key in ("step", "tokens", "elapsed_s", "heads_clipped_total"):
        if not isinstance(state.get(key), (int, float)):
            raise CheckpointError(f"{state_path}: {key} missing or not a number")
    load_model_weights(folder, model)
    try:
        optimizer.load_state(record, opt_path)
    except StateError as e:
        raise CheckpointError(str(e)) from None
    if optimizer.steps != state["step"]:
        raise CheckpointError(f"{opt_path}: step {optimizer.steps} differs from state.json's step {state['step']}")
    return state
