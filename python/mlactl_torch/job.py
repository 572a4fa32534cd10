"""JOB.json, the one input of `python -m mlactl_torch train` (format `mlactl-torch-job/1`, see PROTOCOL.md).

Everything that can be wrong with the input is found here, before any work, and reported as a JobError whose
message is one line naming the key (the CLI shows it and exits 2). Nothing here imports torch, so the thread
settings can be applied before torch starts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

JOB_FORMAT = "mlactl-torch-job/1"

# TypeScript ModelSpec field -> JOB spec key. Either spelling is accepted (JSON.stringify(modelSpec) works as is).
SPEC_KEYS = {
    "variant": "variant", "vocab": "vocab", "d": "d", "L": "L", "H": "H", "dq": "dq", "dc": "dc", "dn": "dn", "dr": "dr",
    "dv": "dv", "dff": "dff", "G": "G", "scope": "scope", "qkEps": "qk_eps", "normEps": "norm_eps", "ropeTheta": "rope_theta",
    "maxSeqLen": "max_seq_len", "tied": "tied", "initStd": "init_std",
}
INT_SPEC = ("vocab", "d", "L", "H", "dq", "dc", "dn", "dr", "dv", "dff", "G", "max_seq_len")
FLOAT_SPEC = ("qk_eps", "norm_eps", "rope_theta", "init_std")

TRAIN_NUMBERS = ("lr", "min_lr_ratio", "decay_fraction", "weight_decay", "beta1", "beta2", "adam_eps", "muon_momentum", "grad_clip", "z_loss")


class JobError(ValueError):
    """Bad input in JOB.json; the message is one line that names the key."""


@dataclass
class EngineSettings:
    """`config.engine` keys read by this engine (others, such as the interpreter or GPU count, are the CLI's)."""

    precision: str = "auto"  # bf16 | fp32 | auto (bf16 on CUDA, fp32 on the CPU)
    compile: Any = "auto"  # true | false | auto (on with CUDA where torch.compile exists)
    threads: int = 0  # CPU threads per process; 0: the cores divided by the local processes
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class Job:
    config: Dict[str, Any]
    spec: Dict[str, Any]  # ModelSpec fields, snake_case
    run_dir: str
    resume_from: Optional[str]
    stop_after_steps: Optional[int]
    total_steps: int
    warmup_steps: int
    tokens_per_step: int
    train_segments: List[dict]
    val_segments: List[dict]
    val_starts: List[int]
    tokenizer: Optional[dict]
    eval_steps: int
    ckpt_steps: int
    maxlogit_steps: int
    engine: EngineSettings

    @property
    def train(self) -> Dict[str, Any]:
        return self.config["train"]

    @property
    def seq_len(self) -> int:
        return self.config["data"]["seq_len"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _get(obj: dict, path: str):
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise JobError(f"{path}: missing")
        node = node[part]
    return node


def _int(obj, path, minimum=0) -> int:
    v = _get(obj, path)
    if not _is_int(v) or v < minimum:
        raise JobError(f"{path}: must be an integer >= {minimum}, got {json.dumps(v)}")
    return v


def _number(obj, path) -> float:
    v = _get(obj, path)
    if not _is_number(v):
        raise JobError(f"{path}: must be a number, got {json.dumps(v)}")
    return float(v)


def _choice(obj, path, choices):
    v = _get(obj, path)
    if v not in choices:
        raise JobError(f"{path}: must be one of {', '.join(map(str, choices))}, got {json.dumps(v)}")
    return v


def parse_spec(raw) -> Dict[str, Any]:
    if not isinstance(raw, dict):
        raise JobError("spec: must be an object")
    spec = {}
    for key, value in raw.items():
        name = SPEC_KEYS.get(key, key)
        if name not in SPEC_KEYS.values():
            raise JobError(f"spec.{key}: unknown key")
        spec[name] = value
    for name in SPEC_KEYS.values():
        if name not in spec:
            raise JobError(f"spec.{name}: missing")
    for name in INT_SPEC:
        if not _is_int(spec[name]) or spec[name] < (0 if name in ("dq", "G") else 1):
            raise JobError(f"spec.{name}: must be a positive integer, got {json.dumps(spec[name])}")
    for name in FLOAT_SPEC:
        if not _is_number(spec[name]):
            raise JobError(f"spec.{name}: must be a number, got {json.dumps(spec[name])}")
        spec[name] = float(spec[name])
    if spec["G"] == 0:  # the config's 0 means one group per head
        spec["G"] = spec["H"]
    if spec["H"] % spec["G"]:
        raise JobError(f"spec.G: {spec['G']} key groups do not divide H = {spec['H']} heads")
    if spec["dr"] % 2:
        raise JobError(f"spec.dr: must be even (RoPE rotates pairs), got {spec['dr']}")
    if spec["variant"] not in ("baseline", "qk-clip", "qk-norm"):
        raise JobError(f"spec.variant: must be baseline, qk-clip or qk-norm, got {json.dumps(spec['variant'])}")
    if spec["scope"] not in ("full", "nope"):
        raise JobError(f"spec.scope: must be full or nope, got {json.dumps(spec['scope'])}")
    if not isinstance(spec["tied"], bool):
        raise JobError("spec.tied: must be true or false")
    return spec


def parse_engine(config: dict) -> EngineSettings:
    raw = config.get("engine") or {}
    if not isinstance(raw, dict):
        raise JobError("config.engine: must be a mapping")
    e = EngineSettings()
    if "precision" in raw:
        e.precision = _choice(raw, "precision", ("bf16", "fp32", "auto"))
    if "compile" in raw:
        if raw["compile"] not in (True, False, "auto"):
            raise JobError(f"config.engine.compile: must be true, false or auto, got {json.dumps(raw['compile'])}")
        e.compile = raw["compile"]
    if "threads" in raw:
        if not _is_int(raw["threads"]) or raw["threads"] < 0:
            raise JobError(f"config.engine.threads: must be an integer >= 0, got {json.dumps(raw['threads'])}")
        e.threads = raw["threads"]
    if "device" in raw:
        e.device = _choice(raw, "device", ("auto", "cpu", "cuda"))
    return e


def _segments(raw, key) -> List[dict]:
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise JobError(f"{key}: must be a list of segments {{path, dtype, offset_tokens, tokens}}")
    return raw


def parse_job(raw) -> Job:
    if not isinstance(raw, dict):
        raise JobError("JOB.json: must be a JSON object")
    if raw.get("format") != JOB_FORMAT:
        raise JobError(f"format: must be {JOB_FORMAT!r}, got {json.dumps(raw.get('format'))}")
    config = raw.get("config")
    if not isinstance(config, dict):
        raise JobError("config: must be the resolved mlactl config as an object")
    for path in ("seed", "data.seed"):
        v = _get(config, path)
        if not _is_int(v):
            raise JobError(f"config.{path}: must be an integer, got {json.dumps(v)}")
    for path, minimum in (("data.seq_len", 1), ("train.batch_size", 1), ("train.grad_accum", 1)):
        _int(config, path, minimum)
    for name in TRAIN_NUMBERS + ("qk_clip.tau", "qk_clip.alpha"):
        _number(config, f"train.{name}")
    _choice(config, "train.optimizer", ("adamw", "muon"))
    _choice(config, "train.schedule", ("cosine", "wsd"))
    spec = parse_spec(raw.get("spec"))
    T = config["data"]["seq_len"]
    if T > spec["max_seq_len"]:
        raise JobError(f"config.data.seq_len: {T} exceeds the model's max_seq_len {spec['max_seq_len']}")
    variant = (config.get("model") or {}).get("variant", spec["variant"])
    if variant != spec["variant"]:
        raise JobError(f"spec.variant: {spec['variant']} differs from config.model.variant {variant}")

    plan = raw.get("plan")
    if not isinstance(plan, dict):
        raise JobError("plan: must be an object {total_steps, warmup_steps, tokens_per_step}")
    total = _int({"plan": plan}, "plan.total_steps", 1)
    warmup = _int({"plan": plan}, "plan.warmup_steps", 0)
    per_step = _int({"plan": plan}, "plan.tokens_per_step", 1)
    expected = config["train"]["batch_size"] * config["train"]["grad_accum"] * T
    if per_step != expected:
        raise JobError(f"plan.tokens_per_step: {per_step}, but batch_size * grad_accum * seq_len = {expected}")

    run_dir = raw.get("run_dir")
    if not isinstance(run_dir, str) or not run_dir:
        raise JobError("run_dir: must be a folder path")
    resume = raw.get("resume_from")
    if resume is not None and (not isinstance(resume, str) or not resume):
        raise JobError("resume_from: must be null or a checkpoint folder")
    stop = raw.get("stop_after_steps")
    if stop is not None and (not _is_int(stop) or stop < 0):
        raise JobError(f"stop_after_steps: must be null or an integer >= 0, got {json.dumps(stop)}")

    data = raw.get("data")
    if not isinstance(data, dict):
        raise JobError("data: must be an object {train: [segments], val: [segments]}")
    train_segments = _segments(data.get("train"), "data.train")
    if not train_segments:
        raise JobError("data.train: no segments")
    val_segments = _segments(data.get("val", []), "data.val")
    val_starts = raw.get("val_starts", [])
    if not isinstance(val_starts, list) or not all(_is_int(s) and s >= 0 for s in val_starts):
        raise JobError("val_starts: must be a list of non-negative integers")

    tokenizer = raw.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, dict):
        raise JobError("tokenizer: must be null or {name, hash, eos}")
    every = raw.get("every") or {}
    if not isinstance(every, dict):
        raise JobError("every: must be an object {eval_steps, ckpt_steps, maxlogit_steps}")
    intervals = [_int({"every": every}, f"every.{k}", 0) if k in every else 0 for k in ("eval_steps", "ckpt_steps", "maxlogit_steps")]

    return Job(
        config=config, spec=spec, run_dir=run_dir, resume_from=resume, stop_after_steps=stop, total_steps=total,
        warmup_steps=warmup, tokens_per_step=per_step, train_segments=train_segments, val_segments=val_segments,
        val_starts=val_starts, tokenizer=tokenizer, eval_steps=intervals[0], ckpt_steps=intervals[1],
        maxlogit_steps=intervals[2], engine=parse_engine(config),
    )


def load_job(path: str) -> Job:
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise JobError(f"{path}: file not found") from None
    except ValueError as e:
        raise JobError(f"{path}: invalid JSON ({str(e).splitlines()[0]})") from None
    return parse_job(raw)
