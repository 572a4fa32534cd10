"""A fused MLA decode step in Triton: one pass over a latent cache, flash-decoding style.

The PyTorch path (decode.latent_attention) reads the cache twice (the scores product reads [c ; kpr], the values
product reads c again) and writes and re-reads the [B, H, S] scores and probabilities. This kernel reads each
cached token's latent c, rotated positional key kpr and (latent+invrms) inverse RMS rk_g once: per block of
BLOCK_N tokens it forms all H heads' scores (q·[c ; kpr], times rk_g for each head's group inside the same tile,
so the G extra numbers per token cost only their bytes), updates an online softmax and accumulates p·c from the
same c tile. Long caches are split over the context (one program per sequence and split, as flash-decoding): each
split leaves a log-sum-exp and a normalised partial output per head, and a second small kernel combines them.

What it computes equals decode.latent_attention (the reference it is checked against):
    s_h(j) = rk_g(h)(j) * (q_h · [c(j) ; kpr(j)])            (rk = 1 for the plain latent cache)
    s_h(j) = rk_g(h)(j) * (qa_h · c(j)) + qpr_h · kpr(j)      (content_only: qk-norm scope nope)
    u_h    = sum_j softmax_j(s_h) c(j)
with every per-query factor (scale, rq, static weights) already in q, except that in a decode step the kernel itself
weights and rotates the positional query qpr (Rope) and computes rq. Accumulation is float32; bf16 caches round p
to bf16 for the values product (as flash attention does); float32 caches use 3xTF32 products (about float32
accuracy on tensor cores), or IEEE float32 where that does not compile.

Used on CUDA when Triton imports and `checked_kernel` passes on this device; everything else takes the PyTorch
path. `python -m mlactl_torch selftest-decode` runs the kernel against float64 and the PyTorch path.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs, and GPUs without Triton: the PyTorch path serves
    triton = None


if triton is not None:

    @triton.jit
    def _dot(a, b, PRECISION: tl.constexpr):
        """a @ b with float32 accumulation; PRECISION picks the float32 x float32 mode ("default" for bf16 inputs)."""
        if PRECISION == "default":
            out = tl.dot(a, b)
        else:
            out = tl.dot(a, b, input_precision=PRECISION)
        return out

    @triton.jit
    def _latent_decode_split(Q, QP, COS, SIN, PW, KV, RK, QS, Lse, Part, S, tokens_per_split, H, DC, DR, W, heads_per_group, eps,
                             sqb, sqh, spqb, spqh, skb, sks, srb, srs, srg, ssb, ssh, slb, sls, spb, sps, sph,
                             HAS_RK: tl.constexpr, CONTENT_ONLY: tl.constexpr, ROPE: tl.constexpr, PRECISION: tl.constexpr,
                             BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
        """One sequence b, one split of its context: Lse[b, split, h] and Part[b, split, h, :] = softmax-weighted c."""
        b = tl.program_id(0).to(tl.int64)
        split = tl.program_id(1)
        heads = tl.arange(0, BLOCK_H)
        fc = tl.arange(0, BLOCK_C)
        fr = tl.arange(0, BLOCK_R)
        head_ok = heads < H
        q_rows = Q + b * sqb + heads[:, None] * sqh
        qc = tl.load(q_rows + fc[None, :], mask=head_ok[:, None] & (fc[None, :] < DC), other=0.0)  # [BLOCK_H, BLOCK_C]
        r_ok = head_ok[:, None] & (fr[None, :] < DR)
        if ROPE:
            # qpr = RoPE(PW ⊙ qp) at this step's position, here rather than in a kernel of its own before this one
            # (at batch 1 each kernel boundary of the step costs about as much as the rotation's whole work).
            # Adjacent pairs (2i, 2i+1), as model.apply_rope: y[r] = z[r] cos_i + sign(r) z[r ^ 1] sin_i, sign -1
            # for even r; in float32, then rounded to the cache's dtype for the product.
            qp_rows = QP + b * spqb + heads[:, None] * spqh
            z = tl.load(qp_rows + fr[None, :], mask=r_ok, other=0.0).to(tl.float32) * tl.load(PW + fr, mask=fr < DR, other=0.0).to(tl.float32)[None, :]
            pair = fr ^ 1
            zp = tl.load(qp_rows + pair[None, :], mask=r_ok, other=0.0).to(tl.float32) * tl.load(PW + pair, mask=fr < DR, other=0.0).to(tl.float32)[None, :]
            cos = tl.load(COS + fr // 2, mask=fr < DR, other=0.0).to(tl.float32)[None, :]
            sin = tl.load(SIN + fr // 2, mask=fr < DR, other=0.0).to(tl.float32)[None, :]
            qr = (z * cos + tl.where((fr % 2 == 0)[None, :], -zp, zp) * sin).to(qc.dtype)  # [BLOCK_H, BLOCK_R]
        else:
            qr = tl.load(q_rows + DC + fr[None, :], mask=r_ok, other=0.0)  # [BLOCK_H, BLOCK_R]
        if HAS_RK:
            # rq_g = 1 / RMS over the group's raw query entries (§4), here rather than in a kernel of its own: one
            # sum of squares per head, then per group through a same-group mask [BLOCK_H, BLOCK_H].
            fw = tl.arange(0, BLOCK_W)
            qs = tl.load(QS + b * ssb + heads[:, None] * ssh + fw[None, :], mask=head_ok[:, None] & (fw[None, :] < W), other=0.0).to(tl.float32)
            per_head = tl.sum(qs * qs, axis=1)  # [BLOCK_H]
            same_group = (heads[:, None] // heads_per_group) == (heads[None, :] // heads_per_group)
            per_group = tl.sum(tl.where(same_group, per_head[None, :], 0.0), axis=1)  # [BLOCK_H]: each head's group total
            rq = 1.0 / tl.sqrt(per_group / (heads_per_group * W) + eps)  # [BLOCK_H]
        m = tl.full([BLOCK_H], float("-inf"), tl.float32)
        l = tl.zeros([BLOCK_H], tl.float32)
        acc = tl.zeros([BLOCK_H, BLOCK_C], tl.float32)
        lo = split * tokens_per_split
        hi = tl.minimum(lo + tokens_per_split, S)
        for start in range(lo, hi, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            col_ok = cols < hi
            rows = KV + b * skb + cols[:, None] * sks
            c = tl.load(rows + fc[None, :], mask=col_ok[:, None] & (fc[None, :] < DC), other=0.0)  # [BLOCK_N, BLOCK_C]
            kr = tl.load(rows + DC + fr[None, :], mask=col_ok[:, None] & (fr[None, :] < DR), other=0.0)  # [BLOCK_N, BLOCK_R]
            content = _dot(qc, tl.trans(c), PRECISION)  # [BLOCK_H, BLOCK_N]
            positional = _dot(qr, tl.trans(kr), PRECISION)
            if HAS_RK:
                # rk_g(j) of each head's group, broadcast inside the tile: G numbers per token, read once.
                rk = tl.load(RK + b * srb + cols[None, :] * srs + (heads[:, None] // heads_per_group) * srg,
                             mask=head_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)  # [BLOCK_H, BLOCK_N]
                factor = rk * rq[:, None]
                if CONTENT_ONLY:
                    s = content * factor + positional
                else:
                    s = (content + positional) * factor
            else:
                s = content + positional
            s = tl.where(col_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            alpha = tl.exp(m - m_new)
            p = tl.exp(s - m_new[:, None])
            l = l * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + _dot(p.to(c.dtype), c, PRECISION)  # the same c tile
            m = m_new
        tl.store(Lse + b * slb + split * sls + heads, m + tl.log(l), mask=head_ok)
        tl.store(Part + b * spb + split * sps + heads[:, None] * sph + fc[None, :], acc / l[:, None],
                 mask=head_ok[:, None] & (fc[None, :] < DC))

    @triton.jit
    def _combine_splits(Lse, Part, Out, splits, DC, slb, sls, spb, sps, sph, sob, soh,
                        BLOCK_S: tl.constexpr, CHUNK_S: tl.constexpr, BLOCK_C: tl.constexpr):
        """
        Out[b, h, cols] = sum over splits of exp(lse_split - lse_total) * Part[b, split, h, cols], one column block,
        stored in Out's dtype (the step's), so no cast kernel follows.
        """
        b = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        fc = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        sp = tl.arange(0, BLOCK_S)
        lse = tl.load(Lse + b * slb + sp * sls + h, mask=sp < splits, other=float("-inf"))  # [BLOCK_S]
        top = tl.max(lse, axis=0)
        total = top + tl.log(tl.sum(tl.exp(lse - top), axis=0))
        u = tl.zeros([BLOCK_C], tl.float32)
        # CHUNK_S splits per load (combine_plan: usually all of them): each pass of this loop is a memory round
        # trip, and a chain of them (hundreds of splits at batch 1) costs as much as a large part of the cache read.
        for first in range(0, splits, CHUNK_S):
            rows = first + tl.arange(0, CHUNK_S)
            ok = rows < splits
            weight = tl.exp(tl.load(Lse + b * slb + rows * sls + h, mask=ok, other=float("-inf")) - total)  # [CHUNK_S]
            part = tl.load(Part + b * spb + rows[:, None] * sps + h * sph + fc[None, :], mask=ok[:, None] & (fc[None, :] < DC), other=0.0)
            u += tl.sum(weight[:, None] * part, axis=0)
        tl.store(Out + b * sob + h * soh + fc, u.to(Out.dtype.element_ty), mask=fc < DC)


@dataclass(frozen=True)
class KernelConfig:
    block_n: int  # cached tokens per tile
    num_warps: int
    num_stages: int
    precision: str  # tl.dot input_precision for float32 caches ("tf32x3" or "ieee"); "default" for bf16
    programs: int  # aim for this many programs (sequences x splits) on a long cache: about two per SM
    long_tokens: int = 1 << 17  # below this many cached tokens in the batch, half as many programs
    combine_numbers: int = 8192  # partials one combine program loads at once (combine_plan)


def candidate_configs(dtype: torch.dtype, device: torch.device):
    """Configs to try, fastest first; the first to compile and pass the self-check is used."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if dtype == torch.float32:
        # float32 tiles are twice the bytes: smaller blocks keep two pipeline stages in shared memory.
        return [KernelConfig(32, 4, 2, "tf32x3", 2 * sms), KernelConfig(16, 4, 2, "tf32x3", 2 * sms), KernelConfig(16, 4, 1, "ieee", 2 * sms)]
    # 32-token tiles, three stages: two programs fit an SM (about 110 KB of shared memory each) and the rk load has
    # registers to spare. In the H200 sweep (bench/NOTES.md, python/tools/tune_decode.py; 8 configs, 16k-256k, batch
    # 1 and 8), with split_plan's program counts, it was within 8% of the fastest plain-cache step everywhere and
    # closest to the byte floor with rk; 64-token tiles with three stages read the plain cache fastest at batch 1
    # but cost 1.19-1.33x with rk.
    return [KernelConfig(32, 4, 3, "default", 2 * sms), KernelConfig(64, 4, 2, "default", 2 * sms), KernelConfig(32, 4, 2, "default", 2 * sms),
            KernelConfig(16, 4, 1, "default", 2 * sms)]


def split_plan(S: int, B: int, cfg: KernelConfig):
    """
    (tokens per split, splits): whole tiles per split, every split non-empty, about cfg.programs programs when the
    batch caches at least cfg.long_tokens tokens and half as many below that. Each split writes H x dc float32
    partials whatever its length, and a split of a few tiles never fills the pipeline: on the H200 one program per
    SM was 10-25% faster than two at batch 1 from 16k to 64k, two per SM faster from 128k cached tokens up (batch 1
    at 256k, batch 8 from 16k; python/tools/tune_decode.py).
    """
    blocks = triton.cdiv(S, cfg.block_n)
    programs = cfg.programs if B * S >= cfg.long_tokens else max(1, cfg.programs // 2)
    wanted = max(1, min(blocks, programs // max(1, B)))
    per_split = cfg.block_n * triton.cdiv(blocks, wanted)
    return per_split, triton.cdiv(S, per_split)


def combine_plan(splits: int, dc: int, cfg: KernelConfig):
    """
    (BLOCK_S, CHUNK_S, BLOCK_C) of the combine kernel: as many splits per load as cfg.combine_numbers allows with
    column blocks of 16-128, so a batch-1 step over hundreds of splits is one load per program spread over many
    narrow column blocks (B x H x dc/BLOCK_C programs) rather than a loop of loads in a few wide ones.
    """
    block_s = max(16, triton.next_power_of_2(splits))
    block_c = min(128, triton.next_power_of_2(dc), max(16, cfg.combine_numbers // block_s))
    return block_s, min(block_s, max(16, cfg.combine_numbers // block_c)), block_c


class Rope(NamedTuple):
    """
    The positional query left for the kernel to weight and rotate: qp [B, H, dr] as projected (the last axis
    contiguous), the cos and sin rows [dr/2] of the new token's position (model.rope_tables) and the static weight
    [dr] that DecodeLayer.absorbed_query would multiply in (positional_weight).
    """
    qp: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    weight: torch.Tensor


def fused_latent_attention(q: torch.Tensor, kv: torch.Tensor, rk: Optional[torch.Tensor], dc: int, content_only: bool,
                           q_stat: Optional[torch.Tensor] = None, eps: float = 0.0, config: Optional[KernelConfig] = None,
                           rope: Optional[Rope] = None) -> torch.Tensor:
    """
    decode.latent_attention in two kernels, same arguments: q [B, H, dc+dr] = [qa ; qpr] (cast to the cache's
    dtype), kv [B, S, dc+dr] (rows may be a slice of a larger cache; the last axis contiguous), rk [B, S, G] and the
    raw query q_stat [B, H, w] for latent+invrms, else None. With `rope`, q is qa alone [B, H, dc] and the kernel
    forms qpr itself (DecodeLayer.attend's single-token step: one kernel fewer). Returns u [B, H, dc] in q's dtype.
    """
    B, H = q.shape[:2]
    S = kv.shape[1]
    dr = kv.shape[2] - dc
    out_dtype = q.dtype
    q = q.to(kv.dtype).contiguous()
    assert q.shape[2] == (dc if rope is not None else dc + dr), "q: [qa ; qpr], or qa alone with rope"
    assert kv.stride(2) == 1 and (rk is None or q_stat.stride(2) == 1), "the fused decode kernel needs contiguous feature axes"
    assert rope is None or rope.qp.stride(2) == 1, "the fused decode kernel needs contiguous feature axes"
    qp, cos, sin, pw = rope if rope is not None else (q, q, q, q)  # never read without ROPE
    per_split, splits = split_plan(S, B, config)
    lse = torch.empty(B, splits, H, device=q.device, dtype=torch.float32)
    part = torch.empty(B, splits, H, dc, device=q.device, dtype=torch.float32)
    G = rk.shape[2] if rk is not None else 1
    rk_arg = rk if rk is not None else kv  # never read without HAS_RK
    qs_arg = q_stat if rk is not None else q
    W = qs_arg.shape[2]
    block_c = max(16, triton.next_power_of_2(dc))
    _latent_decode_split[(B, splits)](
        q, qp, cos, sin, pw, kv, rk_arg, qs_arg, lse, part, S, per_split, H, dc, dr, W, H // G, float(eps),
        q.stride(0), q.stride(1), qp.stride(0), qp.stride(1), kv.stride(0), kv.stride(1), rk_arg.stride(0), rk_arg.stride(1), rk_arg.stride(2),
        qs_arg.stride(0), qs_arg.stride(1), lse.stride(0), lse.stride(1), part.stride(0), part.stride(1), part.stride(2),
        HAS_RK=rk is not None, CONTENT_ONLY=bool(content_only), ROPE=rope is not None, PRECISION=config.precision, BLOCK_H=max(16, triton.next_power_of_2(H)),
        BLOCK_N=config.block_n, BLOCK_C=block_c, BLOCK_R=max(16, triton.next_power_of_2(dr)), BLOCK_W=max(16, triton.next_power_of_2(W)),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    out = torch.empty(B, H, dc, device=q.device, dtype=out_dtype)
    block_s, chunk_s, combine_c = combine_plan(splits, dc, config)
    _combine_splits[(B, H, triton.cdiv(dc, combine_c))](
        lse, part, out, splits, dc, lse.stride(0), lse.stride(1), part.stride(0), part.stride(1), part.stride(2), out.stride(0), out.stride(1),
        BLOCK_S=block_s, CHUNK_S=chunk_s, BLOCK_C=combine_c, num_warps=4)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Checks


def tolerance(dtype: torch.dtype) -> float:
    """Max-abs error over max-abs of the float64 result: bf16 rounds p (and the inputs) to 8 bits."""
    return 1e-2 if dtype == torch.bfloat16 else 2e-5


def random_problem(B: int, S: int, H: int, dc: int, dr: int, G: int, w: int, dtype: torch.dtype, device, seed: int):
    """Queries, a cache, rk and a raw query of the magnitudes a real step sees: scores of a few units, rk near 1."""
    gen = torch.Generator(device=device).manual_seed(seed)
    q = (torch.randn(B, H, dc + dr, device=device, generator=gen) * 0.1).to(dtype)
    kv = torch.randn(B, S, dc + dr, device=device, generator=gen).to(dtype)
    rk = (torch.rand(B, G, S, device=device, generator=gen) + 0.5).to(dtype).transpose(1, 2)  # [B, S, G], the cache's layout
    q_stat = (torch.randn(B, H, w, device=device, generator=gen) * 2).to(dtype)
    return q, kv, rk, q_stat


def reference(q, kv, rk, dc: int, content_only: bool, q_stat=None, eps: float = 1e-6) -> torch.Tensor:
    """decode.latent_attention in float64 on the same (possibly bf16-rounded) inputs."""
    from .decode import latent_attention

    return latent_attention(q.double(), kv.double(), None if rk is None else rk.double(), dc, content_only,
                            None if q_stat is None else q_stat.double(), eps)


def random_rope(qp: torch.Tensor, position: int, seed: int) -> Rope:
    """A Rope for qp [B, H, dr]: a static weight in [0.5, 1.5] and the cos/sin rows of `position` (theta 10000)."""
    from .model import rope_tables

    gen = torch.Generator(device=qp.device).manual_seed(seed)
    weight = (torch.rand(qp.shape[-1], device=qp.device, generator=gen) + 0.5).to(qp.dtype)
    cos, sin = rope_tables(qp.shape[-1], position + 1, 10000.0)
    return Rope(qp, cos[position].to(qp.device), sin[position].to(qp.device), weight)


def roped_query(qa: torch.Tensor, rope: Rope) -> torch.Tensor:
    """[qa ; RoPE(weight ⊙ qp)] in float64, through model.apply_rope: the query the kernel forms from `rope`."""
    from .model import apply_rope

    qpr = apply_rope((rope.qp.double() * rope.weight.double())[:, None], rope.cos[None].double(), rope.sin[None].double())[:, 0]
    return torch.cat([qa.double(), qpr], dim=-1)


def check_case(spec, B: int, S: int, rk_kind: str, with_rope: bool, dtype: torch.dtype, device, seed: int):
    """
    One check of the fused kernel: (args, rope, want) where fused(*args, rope=rope) must give want, the float64
    result, within tolerance(dtype). rk_kind: "none" (the plain latent cache), "full" or "nope" (latent+invrms at
    that QK-norm scope); with_rope: q's positional part is left for the kernel to rotate (Rope).
    """
    w = spec.dn + spec.dr if rk_kind == "full" else spec.dn
    q, kv, rk, q_stat = random_problem(B, S, spec.H, spec.dc, spec.dr, spec.G, w, dtype, device, seed)
    rk, q_stat = (None, None) if rk_kind == "none" else (rk, q_stat)
    rope = random_rope(q[..., spec.dc:], S - 1, seed) if with_rope else None
    if rope is not None:
        q, q_full = q[..., : spec.dc], roped_query(q[..., : spec.dc], rope)
    else:
        q_full = q
    want = reference(q_full, kv, rk, spec.dc, rk_kind == "nope", q_stat, 1e-6)
    return (q, kv, rk, spec.dc, rk_kind == "nope", q_stat, 1e-6), rope, want


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.double()
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-300))


_CHOSEN = {}


def checked_kernel(device: torch.device, dtype: torch.dtype, spec, log=None):
    """
    The fused attention as decode.DecodeLayer.attend takes it (latent_attention's arguments), for this device,
    dtype and layer shape, after a check against float64 on a ragged input; None (with the reason logged) if
    Triton is missing or no config compiles and passes.
    """
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if triton is None or device.type != "cuda":
        return None
    key = (str(device), dtype, spec.H, spec.dc, spec.dr, spec.dn, spec.G)
    if key not in _CHOSEN:
        _CHOSEN[key] = None
        problems = []
        for cfg in candidate_configs(dtype, device):
            try:
                worst = 0.0
                for S, rk_kind, with_rope in ((300, "none", False), (301, "full", True), (77, "nope", False), (78, "none", True)):
                    args, rope, want = check_case(spec, 2, S, rk_kind, with_rope, dtype, device, seed=S)
                    worst = max(worst, relative_error(fused_latent_attention(*args, config=cfg, rope=rope), want))
                if worst <= tolerance(dtype):
                    _CHOSEN[key] = cfg
                    break
                problems.append(f"{cfg}: relative error {worst:.1e} > {tolerance(dtype):.0e}")
            except Exception as e:  # a compile or launch failure must not stop decoding: the PyTorch path is exact
                problems.append(f"{cfg}: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}")
        if _CHOSEN[key] is None:
            say(f"mlactl_torch: fused decode kernel unavailable ({'; '.join(problems)}); using the PyTorch path")
    cfg = _CHOSEN[key]
    return None if cfg is None else functools.partial(fused_latent_attention, config=cfg)


def chosen_config(device: torch.device, dtype: torch.dtype, spec) -> Optional[KernelConfig]:
    return _CHOSEN.get((str(device), dtype, spec.H, spec.dc, spec.dr, spec.dn, spec.G))


def selftest(log=print) -> int:
    """
    `python -m mlactl_torch selftest-decode`: the fused kernel against float64 and against the PyTorch path at
    several context lengths (block multiples and not), batch 1 and 8, fp32 and bf16, for the plain latent cache
    and latent+invrms (scope full and nope, G = H and fewer groups), the query's rotation done before the kernel
    (even contexts) or inside it (odd ones, `+rope`). Prints one line per case and a summary;
    returns 0 when every case is within tolerance, 1 otherwise, 2 without CUDA or Triton.
    """
    from types import SimpleNamespace

    from .decode import latent_attention

    if not torch.cuda.is_available():
        log("selftest-decode: no CUDA device (the fused kernel is CUDA-only)")
        return 2
    if triton is None:
        log("selftest-decode: Triton is not importable")
        return 2
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    log(f"selftest-decode: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, triton {triton.__version__}")
    shapes = [
        ("deepseek-like", SimpleNamespace(H=16, dc=512, dr=64, dn=128, G=16)),
        ("deepseek-like G=1", SimpleNamespace(H=16, dc=512, dr=64, dn=128, G=1)),
        ("paper-400m", SimpleNamespace(H=16, dc=256, dr=32, dn=64, G=4)),
        ("ragged tiny", SimpleNamespace(H=4, dc=12, dr=4, dn=6, G=2)),
    ]
    contexts = (1, 7, 63, 64, 65, 1000, 4097, 65539)
    failures = 0
    log("| shape | dtype | B | S | rk | config | max abs err vs float64 | rel. err | tolerance | vs PyTorch path (max abs) | result |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, spec in shapes:
        for dtype in (torch.float32, torch.bfloat16):
            fused = checked_kernel(device, dtype, spec, log)
            cfg = chosen_config(device, dtype, spec)
            if fused is None:
                log(f"| {name} | {dtype} | - | - | - | none | - | - | - | - | FAIL (no config passed) |")
                failures += 1
                continue
            for B in (1, 8):
                for S in contexts:
                    if name == "ragged tiny" and S > 4097:
                        continue
                    for rk_kind in ("none", "full", "nope"):
                        # Odd contexts leave the positional query's rotation to the kernel (the decode step's way).
                        args, rope, want = check_case(spec, B, S, rk_kind, S % 2 == 1, dtype, device, seed=S * 10 + B)
                        got = fused(*args, rope=rope)
                        q = args[0] if rope is None else roped_query(args[0], rope).to(dtype)
                        torch_path = latent_attention(q, *args[1:])
                        abs_err = float((got.double() - want).abs().max())
                        rel = relative_error(got, want)
                        vs_torch = float((got.double() - torch_path.double()).abs().max())
                        ok = rel <= tolerance(dtype)
                        failures += not ok
                        log(f"| {name} | {str(dtype).replace('torch.', '')} | {B} | {S} | {rk_kind}{' +rope' if rope is not None else ''} | "
                            f"{cfg.block_n}/{cfg.num_warps}/{cfg.num_stages}/{cfg.precision} | "
                            f"{abs_err:.2e} | {rel:.2e} | {tolerance(dtype):.0e} | {vs_torch:.2e} | {'ok' if ok else 'FAIL'} |")
    log(f"selftest-decode: {'all cases within tolerance' if failures == 0 else f'{failures} case(s) FAILED'}")
    return 0 if failures == 0 else 1
