"""The MLA decoder in PyTorch: the training form of ../shared/design/mla-math.md, one module per idea.

Parameter names are the checkpoint names of docs/checkpoint-format.md (Hugging Face DeepSeek-V3), so
`model.state_dict()` and `model.safetensors` map 1:1. The TypeScript engine (src/model/*.ts) is the numeric
reference: same formulas, same operation order where it is cheap to keep.

Shapes: B batch, T tokens, d model width, H heads, G key groups, dn content head width, dr shared positional
(RoPE) width, dv value head width, dc latent width, dq query low-rank width, V vocabulary.

Dtype policy lives in train.py (autocast to bf16 or plain fp32); here, the statistics of every RMSNorm are taken
in float32 whatever the input dtype, and the result goes back to the input's dtype.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

VARIANTS = ("baseline", "qk-clip", "qk-norm")
SCOPES = ("full", "nope")


@dataclass(frozen=True)
class ModelSpec:
    """The model's dimensions with the design note's short names; mirrors `ModelSpec` in src/model/spec.ts."""

    variant: str
    vocab: int
    d: int
    L: int
    H: int
    dq: int  # 0: one query projection q_proj; > 0: q_b_proj(RMSNorm(q_a_proj x))
    dc: int
    dn: int
    dr: int
    dv: int
    dff: int
    G: int  # QK-norm key groups, resolved (1..H, dividing H)
    scope: str
    qk_eps: float
    norm_eps: float
    rope_theta: float
    max_seq_len: int
    tied: bool
    init_std: float

    @property
    def qk_norm_width(self) -> int:
        return self.dn + self.dr if self.scope == "full" else self.dn

    @property
    def scale(self) -> float:
        """Softmax temperature 1/sqrt(dn+dr), the training-form head width (design note §1)."""
        return 1.0 / math.sqrt(self.dn + self.dr)

    def problems(self) -> List[str]:
        """Human-readable reasons this spec cannot be built (empty when it can)."""
        out = []
        if self.variant not in VARIANTS:
            out.append(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.scope not in SCOPES:
            out.append(f"scope must be full or nope, got {self.scope!r}")
        for name in ("vocab", "d", "L", "H", "dc", "dn", "dr", "dv", "dff", "max_seq_len"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                out.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.dq, int) and self.dq >= 0):
            out.append(f"dq must be an integer >= 0, got {self.dq!r}")
        if isinstance(self.dr, int) and self.dr % 2:
            out.append(f"dr must be even (RoPE rotates pairs), got {self.dr}")
        if not (isinstance(self.G, int) and self.G >= 1 and isinstance(self.H, int) and self.H % self.G == 0):
            out.append(f"G must divide H = {self.H}, got {self.G!r}")
        return out


SPEC_FIELDS = tuple(f.name for f in fields(ModelSpec))


# ---------------------------------------------------------------------------------------------------------------
# Norms, RoPE, MLP


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 activations are widened for statistics; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def group_inv_rms(z: torch.Tensor, G: int, eps: float) -> torch.Tensor:
    """
    QK-norm's dynamic factor: 1 / RMS per token and group of H/G consecutive heads, over all their entries.
    z [B, T, H, w] -> [B, T, G], in float32 (float64 for float64 z). The decode caches store it per key (rk).
    """
    B, T, H, w = z.shape
    grouped = at_least_float32(z).reshape(B, T, G, (H // G) * w)
    return torch.rsqrt(grouped.pow(2).mean(dim=-1) + eps)


class RMSNorm(nn.Module):
    """weight ⊙ x / sqrt(mean(x²) + eps) over the last axis, statistics in float32."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = at_least_float32(x)
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).to(x.dtype)


class GroupedQKNorm(nn.Module):
    """
    Explicit QK-norm (design note §3) on per-head vectors [B, T, H, dn+dr], before RoPE. Heads form G groups of
    H/G consecutive heads; one statistic per token and group, over all the group's heads' entries. Scope `full`
    normalises all dn+dr entries (weight of size dn+dr); scope `nope` only the content slice [0:dn] (weight of size
    dn) and passes the positional slice through exactly.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.G, self.dn, self.eps, self.full = spec.G, spec.dn, spec.qk_eps, spec.scope == "full"
        self.weight = nn.Parameter(torch.ones(spec.qk_norm_width))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        part = z if self.full else z[..., : self.dn]
        B, T, H, w = part.shape
        grouped = at_least_float32(part).reshape(B, T, self.G, H // self.G, w)  # [B, T, G, H/G, w]
        inv_rms = group_inv_rms(part, self.G, self.eps)[..., None, None]  # [B, T, G, 1, 1]
        normed = ((grouped * inv_rms).reshape(B, T, H, w) * self.weight).to(z.dtype)
        return normed if self.full else torch.cat([normed, z[..., self.dn :]], dim=-1)


def rope_tables(dr: int, max_len: int, theta: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    cos and sin [max_len, dr/2] of angle t * theta^(-2i/dr), in float64. apply_rope rounds them to the activations'
    dtype once per use, so float32 runs see exactly the float32 tables of the tfjs engine and a float64 model
    (the tests) exact ones.
    """
    inv_freq = torch.tensor([math.pow(theta, (-2 * i) / dr) for i in range(dr // 2)], dtype=torch.float64)
    angle = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [max_len, dr/2]
    return torch.cos(angle), torch.sin(angle)


def apply_rope(z: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """
    Rotate adjacent pairs (2i, 2i+1) of the last axis (dr) of z [B, T, ..., dr] by each token's position:
        y[2i] = z[2i] cos - z[2i+1] sin,   y[2i+1] = z[2i] sin + z[2i+1] cos
    cos, sin: the tables [max_len, dr/2], or rows already picked per token [B, T, dr/2] (packed scoring rows, whose
    positions restart within a row). The layout is the interleaved one of RoFormer, not the half-split of GPT-NeoX.
    """
    B, T = z.shape[:2]
    per_token = cos.dim() == 3
    shape = (B if per_token else 1, T) + (1,) * (z.dim() - 3) + (z.shape[-1] // 2,)
    if not per_token:
        cos, sin = cos[:T], sin[:T]
    c, s = cos.to(z.dtype).view(shape), sin.to(z.dtype).view(shape)
    z0, z1 = z[..., 0::2], z[..., 1::2]
    return torch.stack([z0 * c - z1 * s, z0 * s + z1 * c], dim=-1).flatten(-2)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate x) ⊙ up x)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.gate_proj = nn.Linear(spec.d, spec.dff, bias=False)
        self.up_proj = nn.Linear(spec.d, spec.dff, bias=False)
        self.down_proj = nn.Linear(spec.dff, spec.d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# ---------------------------------------------------------------------------------------------------------------
# Attention

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def _sdpa_takes_scale() -> bool:
    """torch >= 2.1 has `scale=`; SDPA is a builtin, so its first docstring line is the signature to read."""
    if not HAS_SDPA:
        return False
    try:
        return "scale" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):
        return "scale" in (F.scaled_dot_product_attention.__doc__ or "").split("->")[0]


SDPA_TAKES_SCALE = _sdpa_takes_scale()


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """
    softmax(scale q kᵀ + mask) v for q, k [B, H, T, dn+dr], v [B, H, T, dv] -> [B, H, T, dv]. The mask is causal,
    or `mask` [B, 1, T, T] (True: may attend) when given: scoring packs sequences that share a prefix into one row.
    """
    if HAS_SDPA:
        causal = mask is None
        if SDPA_TAKES_SCALE:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
        # torch 2.0 has no scale argument; its default 1/sqrt(q.size(-1)) = 1/sqrt(dn+dr) is exactly ours.
        assert abs(scale - 1.0 / math.sqrt(q.shape[-1])) < 1e-12
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    T = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, T, T]
    hidden = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1) if mask is None else ~mask
    return torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1) @ v


class MLAttention(nn.Module):
    """Multi-head Latent Attention, training form (design note §1), with optional QK-norm (§3)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        s = self.spec = spec
        if s.dq > 0:
            self.q_a_proj = nn.Linear(s.d, s.dq, bias=False)
            self.q_a_layernorm = RMSNorm(s.dq, s.norm_eps)
            self.q_b_proj = nn.Linear(s.dq, s.H * (s.dn + s.dr), bias=False)
        else:
            self.q_proj = nn.Linear(s.d, s.H * (s.dn + s.dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(s.d, s.dc + s.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(s.dc, s.norm_eps)
        self.kv_b_proj = nn.Linear(s.dc, s.H * (s.dn + s.dv), bias=False)
        self.o_proj = nn.Linear(s.H * s.dv, s.d, bias=False)
        if s.variant == "qk-norm":
            self.q_norm = GroupedQKNorm(s)
            self.k_norm = GroupedQKNorm(s)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keep_qk: bool = False, mask: Optional[torch.Tensor] = None):
        """x [B, T, d] -> (out [B, T, d], (q, k) detached [B, H, T, dn+dr] after QK-norm and RoPE, or None)."""
        s = self.spec
        B, T, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if s.dq > 0 else self.q_proj(x)
        q = q.view(B, T, s.H, s.dn + s.dr)  # [B, T, H, dn+dr]: per head [qn_h ; qp_h]
        a, kp = self.kv_a_proj_with_mqa(x).split([s.dc, s.dr], dim=-1)  # [B, T, dc], [B, T, dr]
        c = self.kv_a_layernorm(a)  # the latent; part of MLA, not QK-norm
        kv = self.kv_b_proj(c).view(B, T, s.H, s.dn + s.dv)  # [B, T, H, dn+dv]: per head [kn_h ; v_h]
        kn, v = kv.split([s.dn, s.dv], dim=-1)  # [B, T, H, dn], [B, T, H, dv]
        k = torch.cat([kn, kp[:, :, None, :].expand(B, T, s.H, s.dr)], dim=-1)  # [B, T, H, dn+dr], kp shared
        if s.variant == "qk-norm":
            q, k = self.q_norm(q), self.k_norm(k)
        q = torch.cat([q[..., : s.dn], apply_rope(q[..., s.dn :], cos, sin)], dim=-1)
        k = torch.cat([k[..., : s.dn], apply_rope(k[..., s.dn :], cos, sin)], dim=-1)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, .]
        o = causal_attention(q, k, v.to(q.dtype), s.scale, mask)  # [B, H, T, dv]
        out = self.o_proj(o.transpose(1, 2).reshape(B, T, s.H * s.dv))
        return out, ((q.detach(), k.detach()) if keep_qk else None)


@torch.no_grad()
def max_attention_logits(q: torch.Tensor, k: torch.Tensor, scale: float, budget: int = 1 << 27) -> torch.Tensor:
    """
    S_h = max over batch, t and j <= t of scale * q_h(t)·k_h(j) (design note §5/§6), for q, k [B, H, T, D] as the
    attention used them. A separate pass, so the fused attention never has to materialise its scores: query rows
    go in blocks of at most `budget` score entries, and each block only meets the keys it can see. Returns [H]
    in float32 (float64 for float64 inputs). For bf16 q and k the products are rounded to bf16 (about 0.4%)
    before the max, which is close enough to decide clipping and to log; fp32 runs are exact to float32.
    """
    B, H, T, _ = q.shape
    rows = max(1, min(T, budget // max(1, B * H * T)))
    best = torch.full((H,), float("-inf"), dtype=q.dtype, device=q.device)
    for t0 in range(0, T, rows):
        t1 = min(T, t0 + rows)
        dots = q[:, :, t0:t1] @ k[:, :, :t1].transpose(-1, -2)  # [B, H, t1-t0, t1], unscaled
        future = torch.arange(t1, device=q.device)[None, :] > torch.arange(t0, t1, device=q.device)[:, None]
        best = torch.maximum(best, dots.masked_fill(future, float("-inf")).amax(dim=(0, 2, 3)))
    # scale > 0 commutes with max: one multiplication in float32 instead of one per score (and no bf16 rounding of it).
    return at_least_float32(best) * scale


@torch.no_grad()
def layer_max_logits(qk: List[Tuple[torch.Tensor, torch.Tensor]], scale: float) -> torch.Tensor:
    """S_h of every layer: [L, H]. train.py compiles this on CUDA (one graph: the mask is fused into the max)."""
    return torch.stack([max_attention_logits(q, k, scale) for q, k in qk])


# ---------------------------------------------------------------------------------------------------------------
# Decoder


class DecoderLayer(nn.Module):
    """Pre-norm block: h = x + Attention(RMSNorm(x)); x' = h + MLP(RMSNorm(h))."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.input_layernorm = RMSNorm(spec.d, spec.norm_eps)
        self.self_attn = MLAttention(spec)
        self.post_attention_layernorm = RMSNorm(spec.d, spec.norm_eps)
        self.mlp = MLP(spec)

    def forward(self, x, cos, sin, keep_qk: bool = False, mask: Optional[torch.Tensor] = None):
        a, qk = self.self_attn(self.input_layernorm(x), cos, sin, keep_qk, mask)
        h = x + a
        return h + self.mlp(self.post_attention_layernorm(h)), qk


class MLAModel(nn.Module):
    """Embedding, L decoder layers, final norm: tokens [B, T] -> final-normed hidden states [B, T, d]."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab, spec.d)
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(spec.L))
        self.norm = RMSNorm(spec.d, spec.norm_eps)
        cos, sin = rope_tables(spec.dr, spec.max_seq_len, spec.rope_theta)
        # Not parameters and not in checkpoints: derived from the config.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor, keep_qk: bool = False, positions: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None):
        """
        Positions are 0..T-1 and attention causal, unless scoring passes packed rows: `positions` [B, T] (each
        token's position in its own sequence) and `mask` [B, 1, T, T] (True where a token may attend).
        """
        x = self.embed_tokens(tokens)  # [B, T, d]
        cos, sin = (self.rope_cos, self.rope_sin) if positions is None else (self.rope_cos[positions], self.rope_sin[positions])
        kept = []
        for layer in self.layers:
            x, qk = layer(x, cos, sin, keep_qk, mask)
            kept.append(qk)
        return self.norm(x), (kept if keep_qk else None)


class LMOutput(NamedTuple):
    logits: Optional[torch.Tensor]  # [B, T, V], only without targets
    loss: Optional[torch.Tensor]  # cross-entropy + z-loss (what is differentiated)
    ce: Optional[torch.Tensor]  # mean cross-entropy, nats per token
    qk: Optional[list]  # per layer (q, k) [B, H, T, dn+dr], detached, when keep_qk


class MLAForCausalLM(nn.Module):
    """The decoder and its output head (tied to the embedding when spec.tied)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        problems = spec.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.spec = spec
        self.model = MLAModel(spec)
        if not spec.tied:
            self.lm_head = nn.Linear(spec.d, spec.vocab, bias=False)

    def head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.spec.tied else self.lm_head.weight

    def forward(self, tokens: torch.Tensor, targets: Optional[torch.Tensor] = None, z_loss: float = 0.0, keep_qk: bool = False) -> LMOutput:
        """tokens [B, T] (int64). With targets [B, T]: the loss and cross-entropy, and no logits returned."""
        h, qk = self.model(tokens, keep_qk)
        if targets is None:
            return LMOutput(F.linear(h, self.head_weight()), None, None, qk)  # logits [B, T, V]
        loss, ce = self.head_loss(h, targets, z_loss)
        return LMOutput(None, loss, ce, qk)

    def head_loss(self, h: torch.Tensor, targets: torch.Tensor, z_loss: float) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Output head and loss in one method, so training can compile them as one graph: the [B, T, V] logits then
        never reach memory in float32 (at paper-400m, 16 x 2048 x 50304 of them would be 6.6 GB).
        """
        return lm_loss(F.linear(h, self.head_weight()), targets, z_loss)


def build_for_loading(spec: ModelSpec, device) -> MLAForCausalLM:
    """
    The model on `device`, its parameters about to be overwritten by a checkpoint. On a GPU (torch >= 2.0) the
    modules are built there, so their throwaway random initialisation is a few kernel launches rather than a CPU
    pass (paper-400m: 2-3 s). The meta device would skip it altogether, but on an H200 host its first use cost
    about 4 s (bench/NOTES.md). The RoPE tables are recomputed on the CPU, so they are bit-identical everywhere.
    """
    if torch.device(device).type != "cuda" or not hasattr(torch.device, "__enter__"):
        return MLAForCausalLM(spec).to(device)
    with torch.device(device):
        model = MLAForCausalLM(spec)
    cos, sin = rope_tables(spec.dr, spec.max_seq_len, spec.rope_theta)
    derived = {"model.rope_cos": cos, "model.rope_sin": sin}
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name not in derived:
                raise RuntimeError(f"build_for_loading: buffer {name} is not recomputed on the CPU")
            buffer.copy_(derived[name])
    return model


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, z_loss: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy in float32, plus z_loss * mean(logsumexp²) (PaLM's z-loss; src/engine/tfjs/head-loss.ts)."""
    flat = logits.float().reshape(-1, logits.shape[-1])  # [B*T, V]
    target = targets.reshape(-1)
    if z_loss <= 0:
        ce = F.cross_entropy(flat, target)
        return ce, ce
    lse = torch.logsumexp(flat, dim=-1)  # [B*T]
    ce = (lse - flat.gather(1, target[:, None]).squeeze(1)).mean()
    return ce + z_loss * lse.pow(2).mean(), ce


def compile_blocks(model: MLAForCausalLM) -> torch.nn.Module:
    """
    torch.compile block by block, as torchtitan does: parameters are graph inputs, so paper-400m's 24 decoder layers
    share one compiled graph and compilation costs about one layer, not the whole model (minutes saved per run).
    The head and loss compile as one more graph, so the float32 logits never reach memory. The state dict keeps
    its names. Returns the module to call; torch < 2.2 (no nn.Module.compile) compiles the model whole.
    """
    if not hasattr(torch.nn.Module, "compile"):
        return torch.compile(model)
    dynamo = torch._dynamo.config
    # Guards may still tell layers apart on some versions: every layer must get a graph, never an eager fallback.
    dynamo.cache_size_limit = max(dynamo.cache_size_limit, 4 * len(model.model.layers))
    if hasattr(dynamo, "accumulated_cache_size_limit"):
        dynamo.accumulated_cache_size_limit = max(dynamo.accumulated_cache_size_limit, 8 * len(model.model.layers))
    for layer in model.model.layers:
        layer.compile()
    model.model.norm.compile()
    model.head_loss = torch.compile(model.head_loss)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Parameters: names, init, and the checkpoint table


def residual_output(name: str) -> bool:
    """o_proj and down_proj write into the residual stream; they start at std / sqrt(2L) (GPT-2)."""
    return name.endswith("self_attn.o_proj.weight") or name.endswith("mlp.down_proj.weight")


def parameter_order(spec: ModelSpec) -> List[str]:
    """Parameter names in the order of paramInfos (src/model/params.ts): the init and grouping order."""
    names = ["model.embed_tokens.weight"]
    for i in range(spec.L):
        p = f"model.layers.{i}."
        names.append(p + "input_layernorm.weight")
        if spec.dq > 0:
            names += [p + "self_attn.q_a_proj.weight", p + "self_attn.q_a_layernorm.weight", p + "self_attn.q_b_proj.weight"]
        else:
            names.append(p + "self_attn.q_proj.weight")
        names += [p + "self_attn.kv_a_proj_with_mqa.weight", p + "self_attn.kv_a_layernorm.weight", p + "self_attn.kv_b_proj.weight", p + "self_attn.o_proj.weight"]
        if spec.variant == "qk-norm":
            names += [p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"]
        names += [p + "post_attention_layernorm.weight", p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]
    names.append("model.norm.weight")
    if not spec.tied:
        names.append("lm_head.weight")
    return names


@torch.no_grad()
def init_parameters(model: MLAForCausalLM, seed: int) -> None:
    """
    Norm gains 1, matrices N(0, init_std²) (residual outputs init_std / sqrt(2L)), drawn on the CPU from one
    generator in parameter order, so every device and world size starts from the same weights. (The tfjs engine
    draws from its own generator: cross-engine runs start from one engine's step-0 checkpoint.)
    """
    spec = model.spec
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(int(seed))
    for name in parameter_order(spec):
        p = params[name]
        if p.dim() == 1:
            p.fill_(1.0)
            continue
        std = spec.init_std / math.sqrt(2 * spec.L) if residual_output(name) else spec.init_std
        p.copy_(torch.empty(p.shape).normal_(0.0, std, generator=gen))


def count_parameters(s: ModelSpec) -> int:
    """Parameters of the checkpoint table, without building the model."""
    q = s.dq * s.d + s.dq + s.H * (s.dn + s.dr) * s.dq if s.dq > 0 else s.H * (s.dn + s.dr) * s.d
    attn = q + (s.dc + s.dr) * s.d + s.dc + s.H * (s.dn + s.dv) * s.dc + s.d * s.H * s.dv
    qkn = 2 * s.qk_norm_width if s.variant == "qk-norm" else 0
    layer = 2 * s.d + attn + qkn + 3 * s.d * s.dff
    return s.vocab * s.d + s.L * layer + s.d + (0 if s.tied else s.vocab * s.d)
