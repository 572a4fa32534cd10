"""Optimisation: parameter groups, AdamW and Muon as pure updates, the optimizer loop, schedule, clipping, QK-clip.

Everything mirrors src/optim/*.ts (the numeric reference); each function names its TypeScript twin. The update
functions take tensors and return new ones; `Optimizer` only assigns parameters to groups, keeps state and loops.
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from .model import ModelSpec
from .safetensors_io import first_mismatch

# ---------------------------------------------------------------------------------------------------------------
# Groups (src/optim/groups.ts): which optimizer updates a parameter, and whether it is weight-decayed.
#
# Muon takes the hidden 2-D projections of attention and MLP; the embedding (a lookup table), the head (per-token
# output rows) and the norm gains (vectors) stay on AdamW. Every 2-D matrix is decayed, no 1-D gain is.

_LAYER = r"model\.layers\.\d+"
PARAM_RULES = (
    ("embedding", re.compile(r"^model\.embed_tokens\.weight$"), 2),
    ("head", re.compile(r"^lm_head\.weight$"), 2),
    ("hidden", re.compile(rf"^{_LAYER}\.(self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))\.weight$"), 2),
    ("norm", re.compile(r"^model\.norm\.weight$"), 1),
    ("norm", re.compile(rf"^{_LAYER}\.(input_layernorm|post_attention_layernorm|self_attn\.(q_a_layernorm|kv_a_layernorm|q_norm|k_norm))\.weight$"), 1),
)


def assign_param(name: str, shape: Sequence[int], optimizer: str) -> Tuple[str, bool]:
    """(optimizer for this parameter, weight-decayed?). Unknown names and wrong ranks are programming errors."""
    if optimizer not in ("adamw", "muon"):
        raise ValueError(f"unknown optimizer {optimizer!r} for parameter {name}")
    for kind, pattern, rank in PARAM_RULES:
        if pattern.match(name):
            if len(shape) != rank:
                raise ValueError(f"parameter {name} has shape {list(shape)}; expected rank {rank}")
            return ("muon" if optimizer == "muon" and kind == "hidden" else "adamw"), rank == 2
    raise ValueError(f"parameter {name} matches no optimizer group rule")


# ---------------------------------------------------------------------------------------------------------------
# AdamW (src/optim/adamw.ts)


def adamw_step(p, g, m, v, step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float):
    """
    One AdamW step for one parameter; `step` is 1-based (this step included). Returns new (p, m, v):
        m' = b1 m + (1 - b1) g
        v' = b2 v + (1 - b2) g²
        p' = p (1 - lr wd) - lr/(1 - b1^t) * m' / (sqrt(v') / sqrt(1 - b2^t) + eps)
    eps sits on the bias-corrected sqrt(v) (PyTorch's placement); decay never passes through the denominator.
    """
    if not (isinstance(step, int) and step >= 1):
        raise ValueError(f"adamw_step: step must be a 1-based integer, got {step}")
    # Bias corrections in float64 on the host: beta2^t loses digits in float32 late in a run.
    step_size = lr / (1 - beta1**step)
    sqrt_bias_correction2 = math.sqrt(1 - beta2**step)
    m_next = m * beta1 + g * (1 - beta1)
    v_next = v * beta2 + g.square() * (1 - beta2)
    denominator = v_next.sqrt() / sqrt_bias_correction2 + eps
    decayed = p if weight_decay == 0 else p * (1 - lr * weight_decay)
    return decayed - (m_next / denominator) * step_size, m_next, v_next


# ---------------------------------------------------------------------------------------------------------------
# Muon (src/optim/muon.ts; design note §7)

NEWTON_SCHULZ_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """
    Approximately orthogonalise G (a matrix, or a batch of same-shape matrices [..., rows, cols]) with quintic
    Newton-Schulz iterations X <- aX + (bA + cA²)X, A = X Xᵀ, in G's dtype (the caller picks: bf16 on CUDA, fp32 on
    the CPU). X starts at G / (||G||_F + 1e-7) per matrix, so every singular value starts below 1, and works on the
    wide orientation, where A is the smaller Gram matrix.
    """
    if G.dim() < 2:
        raise ValueError(f"newton_schulz5: expected matrices, got shape {list(G.shape)}")
    a, b, c = NEWTON_SCHULZ_COEFFS
    transposed = G.shape[-2] > G.shape[-1]
    X = G.transpose(-2, -1) if transposed else G
    X = X / (X.square().sum(dim=(-2, -1), keepdim=True).sqrt() + 1e-7)
    batch_shape = X.shape[:-2]
    if X.dim() > 3:
        X = X.reshape(-1, *X.shape[-2:])  # [n, r, c]: baddbmm takes one batch axis
    # beta * C + alpha * (X @ Y) in one GEMM with its epilogue: no separate elementwise passes over the products.
    fused_mm = torch.addmm if X.dim() == 2 else torch.baddbmm
    for _ in range(steps):
        A = X @ X.transpose(-2, -1)  # [..., r, r], r = min(rows, cols)
        B = fused_mm(A, A, A, beta=b, alpha=c)  # bA + cA²
        X = fused_mm(X, B, X, beta=a, alpha=1.0)  # aX + BX
    X = X.reshape(*batch_shape, *X.shape[-2:])
    return X.transpose(-2, -1) if transposed else X


def muon_update_scale(rows: int, cols: int) -> float:
    """0.2 sqrt(max(rows, cols)): an orthogonal update then has AdamW's typical RMS, so one lr serves both."""
    return 0.2 * math.sqrt(max(rows, cols))


def muon_step(p, g, m, lr: float, momentum: float, weight_decay: float, nesterov: bool = True, ns_dtype: Optional[torch.dtype] = None):
    """
    One Muon step for one 2-D parameter (or a stack of same-shape ones). Returns new (p, m):
        m' = mu m + g;   u = g + mu m' (Nesterov) or m'
        p' = p (1 - lr wd) - lr 0.2 sqrt(max(rows, cols)) NS5(u)
    """
    if p.dim() < 2:
        raise ValueError(f"muon_step: Muon updates 2-D weights only, got shape {list(p.shape)}")
    rows, cols = p.shape[-2:]  # a leading batch axis holds several same-shape weights
    m_next = m * momentum + g
    direction = g + m_next * momentum if nesterov else m_next
    orthogonal = newton_schulz5(direction.to(ns_dtype or direction.dtype)).to(p.dtype)
    decayed = p if weight_decay == 0 else p * (1 - lr * weight_decay)
    return decayed - orthogonal * (lr * muon_update_scale(rows, cols)), m_next


# ---------------------------------------------------------------------------------------------------------------
# The optimizer loop (src/optim/optimizer.ts). State names are PyTorch's, as in optimizer.safetensors.

EXP_AVG, EXP_AVG_SQ, MOMENTUM_BUFFER, STEP_KEY = "exp_avg", "exp_avg_sq", "momentum_buffer", "step"
FUSED_ADAMW_AVAILABLE = "fused" in inspect.signature(torch.optim.AdamW).parameters


class StateError(ValueError):
    """An optimizer state record that does not belong to this model and optimizer."""


class Optimizer:
    """
    AdamW for every parameter (`optimizer: adamw`) or Muon for the hidden matrices and AdamW for the rest
    (`optimizer: muon`); one learning rate for both. `fused_adamw` hands the AdamW group to PyTorch's fused CUDA
    kernel (the same formula as adamw_step), with the state tensors still owned here.
    """

    def __init__(self, named_params: Iterable[Tuple[str, torch.nn.Parameter]], train: dict, fused_adamw: bool = False, ns_dtype: torch.dtype = torch.float32):
        self.train = train
        self.ns_dtype = ns_dtype
        self.steps = 0
        self.slots: List[Tuple[str, torch.nn.Parameter, str, bool, Dict[str, torch.Tensor]]] = []
        for name, p in named_params:
            opt, decay = assign_param(name, tuple(p.shape), train["optimizer"])
            keys = (EXP_AVG, EXP_AVG_SQ) if opt == "adamw" else (MOMENTUM_BUFFER,)
            self.slots.append((name, p, opt, decay, {k: torch.zeros_like(p, memory_format=torch.contiguous_format) for k in keys}))
        self._fused = self._build_fused() if fused_adamw and FUSED_ADAMW_AVAILABLE else None
        # Muon weights of one shape are updated as one stack: a few batched products instead of ~50 kernels per
        # matrix, which would leave the GPU waiting on kernel launches for most of the update.
        self.muon_groups: Dict[Tuple[int, ...], list] = {}
        for slot in self.slots:
            if slot[2] == "muon":
                self.muon_groups.setdefault(tuple(slot[1].shape), []).append(slot)

    def assignments(self) -> Dict[str, Tuple[str, bool]]:
        return {name: (opt, decay) for name, _, opt, decay, _ in self.slots}

    def _build_fused(self):
        adam = [(p, decay, st) for _, p, opt, decay, st in self.slots if opt == "adamw"]
        if not adam:
            return None
        t = self.train
        groups = [{"params": [p for p, d, _ in adam if d], "weight_decay": t["weight_decay"]}, {"params": [p for p, d, _ in adam if not d], "weight_decay": 0.0}]
        fused = torch.optim.AdamW([g for g in groups if g["params"]], lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["adam_eps"], fused=True)
        for p, _, st in adam:  # our tensors are its state: checkpoints and resume see one set of moments
            fused.state[p] = {"step": torch.tensor(float(self.steps), device=p.device), EXP_AVG: st[EXP_AVG], EXP_AVG_SQ: st[EXP_AVG_SQ]}
        return fused

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One update of every parameter from its .grad (already averaged and clipped)."""
        t, cfg = self.steps + 1, self.train
        for name, p, opt, decay, st in self.slots:
            if p.grad is None:
                raise RuntimeError(f"Optimizer.step: no gradient for parameter {name}")
        for group in self.muon_groups.values():
            params = [p for _, p, _, _, _ in group]
            momenta = [st[MOMENTUM_BUFFER] for _, _, _, _, st in group]
            p_next, m_next = muon_step(torch.stack(params), torch.stack([p.grad for p in params]), torch.stack(momenta), lr,
                                       cfg["muon_momentum"], cfg["weight_decay"], True, self.ns_dtype)  # Muon weights are all 2-D: decayed
            for i, (p, m) in enumerate(zip(params, momenta)):
                p.copy_(p_next[i])
                m.copy_(m_next[i])
        for name, p, opt, decay, st in self.slots:
            wd = cfg["weight_decay"] if decay else 0.0
            if opt == "adamw" and self._fused is None:
                p_next, m_next, v_next = adamw_step(p, p.grad, st[EXP_AVG], st[EXP_AVG_SQ], t, lr, cfg["beta1"], cfg["beta2"], cfg["adam_eps"], wd)
                p.copy_(p_next)
                st[EXP_AVG].copy_(m_next)
                st[EXP_AVG_SQ].copy_(v_next)
        if self._fused is not None:
            for group in self._fused.param_groups:
                group["lr"] = lr
            self._fused.step()
        self.steps = t

    def state_tensors(self) -> Dict[str, torch.Tensor]:
        """`<param>.exp_avg|exp_avg_sq|momentum_buffer` (on the parameters' device) and an int32 scalar `step`."""
        record = {f"{name}.{key}": value for name, _, _, _, st in self.slots for key, value in st.items()}
        record[STEP_KEY] = torch.tensor(self.steps, dtype=torch.int32)
        return record

    def expected_state(self) -> Dict[str, Tuple[int, ...]]:
        shapes = {f"{name}.{key}": tuple(p.shape) for name, p, _, _, st in self.slots for key in st}
        shapes[STEP_KEY] = ()
        return shapes

    @torch.no_grad()
    def load_state(self, record: Dict[str, torch.Tensor], source: str = "optimizer state") -> None:
        """Restore exactly; every expected key, no other, each of its shape. Checked before anything changes."""
        expected = self.expected_state()
        problem = first_mismatch(source, expected, {k: v.shape for k, v in record.items()}, "checkpoint from another model or optimizer?")
        if problem:
            raise StateError(problem)
        step = int(record[STEP_KEY].item())
        if step < 0:
            raise StateError(f"{source}: step must be a non-negative integer, got {step}")
        for name, _, _, _, st in self.slots:
            for key, value in st.items():
                value.copy_(record[f"{name}.{key}"].to(value.dtype))
        self.steps = step
        if self._fused is not None:
            for p_state in self._fused.state.values():
                p_state["step"].fill_(float(step))


# ---------------------------------------------------------------------------------------------------------------
# Schedule (src/optim/schedule.ts)


def learning_rate(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr_ratio: float, schedule: str, decay_fraction: float) -> float:
    """
    The rate of 0-based `step`: f(s) at s = min(step + 1, T), W = min(warmup, T), floor = min_lr_ratio * lr:
      warmup s <= W: lr s / W
      cosine:        floor + (lr - floor)(1 + cos(pi (s - W)/(T - W)))/2
      wsd:           lr until S = max(W, T - decay_fraction T), then linear to floor at T
    """
    if not (isinstance(step, int) and step >= 0):
        raise ValueError(f"learning_rate: step must be a 0-based integer, got {step}")
    if total_steps < 1:
        raise ValueError(f"the run has {total_steps} optimizer steps; at least 1 is needed")
    floor = min_lr_ratio * lr
    T = total_steps
    W = min(warmup_steps, T)
    s = min(step + 1, T)
    if s <= W:
        return lr * s / W
    if schedule == "cosine":
        return floor + (lr - floor) * (1 + math.cos(math.pi * (s - W) / (T - W))) / 2
    if schedule == "wsd":
        decay_start = max(W, T - decay_fraction * T)
        if s <= decay_start:
            return lr
        return lr - (lr - floor) * (s - decay_start) / (T - decay_start)
    raise ValueError(f"train.schedule must be 'cosine' or 'wsd', got {schedule!r}")


# ---------------------------------------------------------------------------------------------------------------
# Clipping (src/optim/gradients.ts), on the device: nothing is read back here.


_FOREACH_NORM = hasattr(torch, "_foreach_norm")


def global_norm(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """
    sqrt(sum over tensors of sum(g²)), a float32 scalar tensor. On CUDA the per-tensor norms come from one
    multi-tensor kernel (three launches per tensor otherwise, which dominate a small model's step); the CPU keeps
    the tfjs engine's sum of squares.
    """
    if not grads:
        return torch.zeros(())
    if _FOREACH_NORM and grads[0].is_cuda:
        return torch.stack(torch._foreach_norm(grads)).float().square().sum().sqrt()
    return torch.stack([g.float().square().sum() for g in grads]).sum().sqrt()


@torch.no_grad()
def clip_by_global_norm_(grads: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale grads in place by min(1, max_norm / (norm + 1e-6)); max_norm <= 0 turns clipping off. Returns the norm before clipping."""
    norm = global_norm(grads)
    if max_norm > 0:
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        if grads[0].is_cuda:
            try:
                torch._foreach_mul_(list(grads), scale)
                return norm
            except (TypeError, RuntimeError):  # torch < 2.1: no tensor scalar for _foreach_mul_
                pass
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return norm


# ---------------------------------------------------------------------------------------------------------------
# QK-clip (src/optim/qkclip.ts; design note §5)


def plan_qk_clip(spec: ModelSpec, max_logits: torch.Tensor, tau: float, alpha: float):
    """
    From per-layer per-head maxima S [L, H] to per-layer row scales of the query projection [L, H*(dn+dr)] and of
    kv_b_proj [L, H*(dn+dv)], float32 (computed in float64 and rounded once, as the tfjs engine does), on the
    maxima's device. For a head with S > tau, eta = tau / S: its qn rows *= eta^alpha, its qp rows *= eta, its kn
    rows *= eta^(1-alpha); the shared kp rows of kv_a_proj and every value row are left alone.
    """
    S = max_logits.double()
    over = S > tau
    eta = torch.where(over, tau / S, torch.ones_like(S))[..., None]  # [L, H, 1]
    L, H = S.shape
    q_rows = torch.cat([eta.pow(alpha).expand(L, H, spec.dn), eta.expand(L, H, spec.dr)], dim=-1)  # [L, H, dn+dr]
    k_rows = torch.cat([eta.pow(1 - alpha).expand(L, H, spec.dn), torch.ones(L, H, spec.dv, dtype=S.dtype, device=S.device)], dim=-1)
    return q_rows.reshape(L, -1).float(), k_rows.reshape(L, -1).float()


@torch.no_grad()
def apply_qk_clip(model, plan, layers) -> None:
    """Scale the planned rows of the live weights in place, for the `layers` that have a clipped head."""
    q_rows, k_rows = plan
    spec = model.spec
    for layer in layers:
        attn = model.model.layers[layer].self_attn
        q_weight = attn.q_b_proj.weight if spec.dq > 0 else attn.q_proj.weight
        q_weight.mul_(q_rows[layer, :, None].to(q_weight.device))
        attn.kv_b_proj.weight.mul_(k_rows[layer, :, None].to(q_weight.device))


def heads_over(max_logits_host, tau: float):
    """Per layer, how many heads have S > tau (from the maxima already read to the host)."""
    return [sum(1 for s in row if s > tau) for row in max_logits_host]
