"""Absorbed MLA decoding (../shared/design/mla-math.md §2, §4): the three caches, prefill and one-token steps.

The torch twin of src/model/decode.ts. Two halves, as there:
  - append: what a cache stores for new tokens. Explicit keys exist only where a cache needs them (rk of
    latent+invrms, the keys of full-key) and are dropped after;
  - attend: n new tokens per sequence (n = 1: a decode step; a whole prompt: a prefill, causal within the block)
    against a cache whose last n filled rows are their own. It reads the cache and never grows it.

Caches (one per layer, preallocated to a capacity, rows 0..S-1 filled):
  latent         kv [B, cap, dc+dr] = [c ; kpr],  kpr = RoPE_j(kp)                         dc + dr numbers per token
  latent+invrms  kv [B, cap, dc+dr] = [c ; kpr],  kpr = RoPE_j(gk_p ⊙ kp) (scope full),
                 rk [B, cap, G]: one inverse key RMS per key group                          dc + dr + G
  full-key       k [B, H, cap, dn+dr]: QK-normed, rotated keys; c [B, cap, dc] for the values  H (dn+dr) + dc

c and kpr sit side by side so the scores are one product of the query [qa ; qpr] with [c ; kpr], and the values
product reads the c columns of the same rows (as FlashMLA lays out its cache).

Latent+invrms costs the latent step plus one read of its G numbers per token: the static per-query factors (the
softmax scale, the static QK-norm weights) are folded into W_UK^h and the positional query weight once, and the
two dynamic ones, rq_g (per query and group, from the raw query) and rk_g(j) (per key), multiply the scores
together, broadcast over the group's heads: on CUDA inside the softmax's kernel (torch.compile) or inside the
fused Triton kernel of decode_triton.py, which also computes rq itself, so the query side has no extra kernel.
The absorbed query is linear in q, so applying rq to the scores instead of to q is the same arithmetic.

Shapes: B sequences, n new tokens per sequence, S cached tokens (the new ones included), H heads, G key groups,
dc latent, dn content head width, dr positional width, dv value head width, d model width, V vocabulary.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .model import MLAForCausalLM, MLAttention, ModelSpec, apply_rope, at_least_float32, group_inv_rms

CACHE_KINDS = ("latent", "latent+invrms", "full-key")


def caches_for(spec: ModelSpec) -> tuple:
    """The caches that reproduce the training form exactly, cheapest first (src/model/variants.ts)."""
    return ("latent+invrms", "full-key") if spec.variant == "qk-norm" else ("latent", "full-key")


def default_cache(spec: ModelSpec) -> str:
    return caches_for(spec)[0]


def numbers_per_token(spec: ModelSpec, kind: str) -> int:
    """Numbers one token stores per layer (cacheNumbersPerToken in src/model/spec.ts)."""
    return {"latent": spec.dc + spec.dr, "latent+invrms": spec.dc + spec.dr + spec.G, "full-key": spec.H * (spec.dn + spec.dr) + spec.dc}[kind]


class DecodeError(ValueError):
    """A request the decoder cannot serve (a cache for another variant, a context past max_seq_len); one line."""


# ---------------------------------------------------------------------------------------------------------------
# Caches


class LayerCache:
    """One attention layer's cache for B sequences: rows 0..capacity-1 allocated up front; the caller tracks S."""

    def __init__(self, kind: str, spec: ModelSpec, batch: int, capacity: int, device, dtype: torch.dtype):
        s = spec
        self.kind = kind
        self.rk: Optional[torch.Tensor] = None
        self.k: Optional[torch.Tensor] = None
        if kind == "full-key":
            self.kv = None
            self.c = torch.empty(batch, capacity, s.dc, device=device, dtype=dtype)  # [B, cap, dc]
            self.k = torch.empty(batch, s.H, capacity, s.dn + s.dr, device=device, dtype=dtype)  # [B, H, cap, dn+dr]
        else:
            self.kv = torch.empty(batch, capacity, s.dc + s.dr, device=device, dtype=dtype)  # [B, cap, dc+dr]
            self.c = self.kv[..., : s.dc]  # a view: the values product reads these columns
            if kind == "latent+invrms":
                # Stored group-major [B, G, cap] and used through a [B, cap, G] view: the scores' scaling then reads
                # each group's numbers along the context contiguously (strided [cap, G] reads, inside a softmax with
                # only H rows to spread over the GPU, tripled the PyTorch path's step at 256k on the H200).
                self.rk = torch.empty(batch, s.G, capacity, device=device, dtype=dtype).transpose(1, 2)  # [B, cap, G]

    def shapes(self, S: int) -> Dict[str, List[int]]:
        """What S filled rows hold, name -> shape, as IncrementalDecoder.cacheShapes reports (sequences first)."""
        B, _, dc = self.c.shape
        if self.kind == "full-key":
            return {"c": [B, S, dc], "k": [B, self.k.shape[1], S, self.k.shape[3]]}
        out = {"c": [B, S, dc], "kpr": [B, S, self.kv.shape[2] - dc]}
        if self.rk is not None:
            out["rk"] = [B, S, self.rk.shape[2]]
        return out


# ---------------------------------------------------------------------------------------------------------------
# One layer


def rope_from(z: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int) -> torch.Tensor:
    """RoPE of z [B, n, ..., dr] at positions start..start+n-1 (model.apply_rope takes positions from 0)."""
    return apply_rope(z, cos[start:], sin[start:])


def scale_scores_by_key_group(scores: torch.Tensor, rk: torch.Tensor, rq: torch.Tensor) -> torch.Tensor:
    """
    scores [..., n*H, S] (rows token-major, heads within) times rq_g of each row's token and group and rk_g(j) of each
    key: rk [..., S, G], rq [..., n, G]; the leading axes broadcast (the chunked step's [B, chunks]).
    """
    *lead, rows, S = scores.shape
    n, G = rq.shape[-2:]
    by_group = scores.view(*lead, n, G, rows // (n * G), S)  # [..., n, G, H/G, S]
    # In float32 at least: a bf16 cache's scores meet an unrounded rq * rk (the product promotes them).
    factor = at_least_float32(rk).transpose(-1, -2)[..., None, :, None, :] * rq[..., :, :, None, None]  # [..., n, G, 1, S]
    return (by_group * factor).view(*lead, rows, S)


def block_causal_mask(n: int, S: int, device) -> torch.Tensor:
    """True where query i (position S-n+i) would see a later key: [n, S]."""
    keys = torch.arange(S, device=device)
    queries = torch.arange(S - n, S, device=device)
    return keys[None, :] > queries[:, None]


def latent_scores(q: torch.Tensor, kv: torch.Tensor, rk: Optional[torch.Tensor], rq: Optional[torch.Tensor], dc: int, content_only: bool) -> torch.Tensor:
    """
    Scores [..., n*H, S] of query rows q [..., n*H, dc+dr] = [qa ; qpr] against a latent cache kv [..., S, dc+dr]
    (leading axes broadcast). With rk [..., S, G] and rq [..., n, G] (latent+invrms): both multiply the scores, or
    only the content term qa·c (content_only: qk-norm scope nope, whose positional slices are not normalised).
    """
    if rk is None:
        return q @ kv.transpose(-1, -2)  # content and positional terms in one product
    if content_only:
        content = q[..., :dc] @ kv[..., :dc].transpose(-1, -2)
        return scale_scores_by_key_group(content, rk, rq) + q[..., dc:] @ kv[..., dc:].transpose(-1, -2)
    return scale_scores_by_key_group(q @ kv.transpose(-1, -2), rk, rq)


def latent_attention(q: torch.Tensor, kv: torch.Tensor, rk: Optional[torch.Tensor], dc: int, content_only: bool,
                     q_stat: Optional[torch.Tensor] = None, eps: float = 0.0) -> torch.Tensor:
    """
    One new token per sequence against a latent cache, the PyTorch path (a pure function, so torch.compile can fuse
    the rq and rk multiplies into the softmax's kernel). q [B, H, dc+dr] = [qa ; qpr] with the static factors in
    it; kv [B, S, dc+dr]; rk [B, S, G] or None. For latent+invrms, q_stat [B, H, w] is the raw query whose group
    RMS gives rq (w: dn+dr for scope full, dn for nope). Returns u [B, H, dc], the attention output in latent space.
    """
    rq = None if rk is None else group_inv_rms(q_stat[:, None], rk.shape[2], eps)  # [B, 1, G]
    scores = at_least_float32(latent_scores(q, kv, rk, rq, dc, content_only))  # [B, H, S], float32 whatever the cache
    p = torch.softmax(scores, dim=-1).to(kv.dtype)
    return p @ kv[..., :dc]  # [B, H, dc]


def _chunk_partials(q, kv, rk, rq, dc: int, content_only: bool, n: int, size: int):
    """
    Softmax statistics and unnormalised outputs of n chunks of `size` cached rows each: q [B, H, D], kv [B, n*size,
    D], rk [B, n*size, G] or None, rq [B, 1, G]. Returns m, l [B, n, H] and o [B, n, H, dc] (o / l is the chunk's
    attention output, m its largest score).
    """
    B, H, D = q.shape
    chunks = kv.reshape(B, n, size, D)  # a view: the context axis split in two
    rk_chunks = None if rk is None else rk.reshape(B, n, size, rk.shape[2])
    # Every chunk against the same query rows: [B, 1, H, D] broadcast over the chunks -> s [B, n, H, size].
    s = at_least_float32(latent_scores(q[:, None], chunks, rk_chunks, None if rq is None else rq[:, None], dc, content_only))
    m = s.amax(dim=-1)  # [B, n, H]
    p = torch.exp(s - m[..., None])
    return m, p.sum(dim=-1), p.to(kv.dtype) @ chunks[..., :dc]


def latent_attention_chunked(q: torch.Tensor, kv: torch.Tensor, rk: Optional[torch.Tensor], dc: int, content_only: bool,
                             q_stat: Optional[torch.Tensor] = None, eps: float = 0.0, chunk: int = 1024) -> torch.Tensor:
    """
    latent_attention with the context cut into chunks of `chunk` rows (the last one shorter), flash-decoding style
    in plain PyTorch: one batched product per chunk for the scores and one for the values, a softmax per (chunk,
    head) row, then the chunks' outputs merged by their log-sum-exp. Same arguments and result. Compiled on CUDA,
    this is the PyTorch path's single-token step: the plain form's softmax has only H rows of S scores to spread
    over the GPU and its values product reduces over all S rows in one matrix product; here both have B * S/chunk
    * H rows, and the rk multiply sits in the per-chunk softmax kernel rather than in a kernel of its own. The
    partial outputs are in the cache's dtype (bf16 rounds them, within bf16's tolerance), their merge in float32.
    """
    rq = None if rk is None else group_inv_rms(q_stat[:, None], rk.shape[2], eps)  # [B, 1, G]
    whole, rest = divmod(kv.shape[1], chunk)
    parts = []
    if whole:
        parts.append(_chunk_partials(q, kv[:, : whole * chunk], None if rk is None else rk[:, : whole * chunk], rq, dc, content_only, whole, chunk))
    if rest:
        parts.append(_chunk_partials(q, kv[:, whole * chunk :], None if rk is None else rk[:, whole * chunk :], rq, dc, content_only, 1, rest))
    m, l, o = (torch.cat(t, dim=1) for t in zip(*parts)) if len(parts) > 1 else parts[0]
    weight = torch.exp(m - m.amax(dim=1, keepdim=True))  # [B, n, H]: each chunk against the largest score
    u = (weight[..., None] * at_least_float32(o)).sum(dim=1) / (weight * l).sum(dim=1)[..., None]
    return u.to(kv.dtype)  # [B, H, dc], as latent_attention


class DecodeLayer:
    """
    One attention layer's weights rearranged for decoding. `spec.variant` decides whether QK-norm applies, so one
    set of weights can be served both ways (the benchmark compares latent and latent+invrms on the same layer).
    Weights are folded in float32 (float64 for a float64 layer) and then cast to `dtype` (default: the layer's).
    """

    def __init__(self, attn: MLAttention, spec: ModelSpec, cos: torch.Tensor, sin: torch.Tensor, dtype: Optional[torch.dtype] = None):
        s = self.spec = spec
        self.attn = attn
        self.qk_norm = spec.variant == "qk-norm"
        self.full = spec.scope == "full"
        self.cos, self.sin = cos, sin
        weight = attn.kv_b_proj.weight.detach()
        self.dtype = dtype or weight.dtype
        with torch.no_grad():
            w = at_least_float32(weight).view(s.H, s.dn + s.dv, s.dc)  # per head [W_UK^h ; W_UV^h]
            w_uk, w_uv = w[:, : s.dn], w[:, s.dn :]  # [H, dn, dc], [H, dv, dc]
            content = torch.full((s.dn,), s.scale, dtype=w.dtype, device=w.device)
            positional = torch.full((s.dr,), s.scale, dtype=w.dtype, device=w.device)
            self.kp_weight = None
            if self.qk_norm:
                gq, gk = at_least_float32(attn.q_norm.weight.detach()), at_least_float32(attn.k_norm.weight.detach())
                # §4: the static key weight moves to the query side; the query weight goes with it (rq is taken first).
                content = content * gq[: s.dn] * gk[: s.dn]
                if self.full:
                    positional = positional * gq[s.dn :]
                    self.kp_weight = gk[s.dn :].to(self.dtype)  # stored inside kpr
            self.w_uk = w_uk.to(self.dtype)  # explicit keys at append time
            self.w_uk_absorbed = (w_uk * content[None, :, None]).to(self.dtype)  # qa_h = qn_h @ this, scaled
            self.w_uv = w_uv.to(self.dtype)
            self.positional_weight = positional.to(self.dtype)
        self.query_fn = self.absorbed_query
        self.parts_fn = self.absorbed_query_parts
        self.latent_fn = latent_attention
        self.output_fn = self.output

    # --- append ---------------------------------------------------------------------------------------------

    def latent_of(self, x: torch.Tensor):
        """[a ; kp] = W_DKV x, c = RMSNorm_kv(a): x [B, n, d] -> c [B, n, dc], kp [B, n, dr]."""
        s = self.spec
        a, kp = self.attn.kv_a_proj_with_mqa(x).split([s.dc, s.dr], dim=-1)
        return self.attn.kv_a_layernorm(a), kp

    def explicit_keys(self, c: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
        """k_h = [W_UK^h c ; kp], un-normed and un-rotated: c [B, n, dc], kp [B, n, dr] -> [B, n, H, dn+dr]."""
        B, n, _ = c.shape
        kn = torch.einsum("bnc,hdc->bnhd", c, self.w_uk.to(c.dtype))  # [B, n, H, dn]
        return torch.cat([kn, kp[:, :, None, :].expand(B, n, self.spec.H, self.spec.dr)], dim=-1)

    def store(self, cache: LayerCache, c: torch.Tensor, kp: torch.Tensor, start: int) -> None:
        """Write the cache rows of tokens start..start+n-1 from their latent c [B, n, dc] and shared key kp [B, n, dr]."""
        s = self.spec
        n = c.shape[1]
        rows = slice(start, start + n)
        if cache.kind == "full-key":
            k = self.explicit_keys(c, kp)
            if self.qk_norm:
                k = self.attn.k_norm(k)  # the training form's QK-norm (§3)
            k = torch.cat([k[..., : s.dn], rope_from(k[..., s.dn :], self.cos, self.sin, start)], dim=-1)
            cache.k[:, :, rows] = k.transpose(1, 2).to(cache.k.dtype)  # [B, H, n, dn+dr]
            cache.c[:, rows] = c.to(cache.c.dtype)
            return
        self.check_latent_kind(cache.kind)
        if cache.kind == "latent+invrms":
            k = self.explicit_keys(c, kp)  # the full keys live only long enough to give rk
            cache.rk[:, rows] = group_inv_rms(k if self.full else k[..., : s.dn], s.G, s.qk_eps).to(cache.rk.dtype)
            if self.full:
                kp = kp * self.kp_weight.to(kp.dtype)
        cache.kv[:, rows, : s.dc] = c.to(cache.kv.dtype)
        cache.kv[:, rows, s.dc :] = rope_from(kp, self.cos, self.sin, start).to(cache.kv.dtype)

    def append(self, cache: LayerCache, x: torch.Tensor, start: int) -> None:
        """Cache rows of new tokens from their normed hidden states x [B, n, d]."""
        c, kp = self.latent_of(x)
        self.store(cache, c, kp, start)

    def check_latent_kind(self, kind: str) -> None:
        if kind == "latent" and self.qk_norm:
            raise DecodeError("the plain latent cache cannot apply QK-norm; use latent+invrms")
        if kind == "latent+invrms" and not self.qk_norm:
            raise DecodeError("the latent+invrms cache is for the qk-norm variant")

    # --- attend ---------------------------------------------------------------------------------------------

    def project_query(self, x: torch.Tensor) -> torch.Tensor:
        """q_h = [qn_h ; qp_h]: x [B, n, d] -> [B, n, H, dn+dr]."""
        a, s = self.attn, self.spec
        q = a.q_b_proj(a.q_a_layernorm(a.q_a_proj(x))) if s.dq > 0 else a.q_proj(x)
        return q.view(x.shape[0], x.shape[1], s.H, s.dn + s.dr)

    def absorbed_query(self, x: torch.Tensor, start: int, invrms: bool):
        """
        [qa ; qpr] of new tokens x [B, n, d] at positions start.. for a latent cache: [B, n, H, dc+dr], with the
        scale and the static weights folded in (w_uk_absorbed, positional_weight). For latent+invrms also the raw
        query slice whose group RMS is rq (all of q for scope full, qn for nope): [B, n, H, w]; else None.
        """
        qa, qp, q_stat = self.absorbed_query_parts(x, invrms)
        qpr = rope_from(qp * self.positional_weight, self.cos, self.sin, start)  # [B, n, H, dr]
        return torch.cat([qa, qpr], dim=-1), q_stat

    def absorbed_query_parts(self, x: torch.Tensor, invrms: bool):
        """
        absorbed_query short of the positional query's weight and rotation, which the fused kernel applies itself
        (decode_triton.Rope): qa [B, n, H, dc], qp [B, n, H, dr] as projected, q_stat as absorbed_query gives it.
        """
        s = self.spec
        q = self.project_query(x)
        qn, qp = q[..., : s.dn], q[..., s.dn :]
        qa = torch.einsum("bnhd,hdc->bnhc", qn, self.w_uk_absorbed)  # [B, n, H, dc]
        return qa, qp, ((q if self.full else qn) if invrms else None)

    def full_key_query(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The training form's query: QK-normed, rotated, times the scale: [B, n, H, dn+dr]."""
        s = self.spec
        q = self.project_query(x)
        if self.qk_norm:
            q = self.attn.q_norm(q)
        q = torch.cat([q[..., : s.dn], rope_from(q[..., s.dn :], self.cos, self.sin, start)], dim=-1)
        return q * s.scale

    def output(self, u: torch.Tensor) -> torch.Tensor:
        """u [B, n, H, dc] -> W_O concat_h(W_UV^h u_h): [B, n, d]."""
        B, n, H, _ = u.shape
        o = torch.einsum("bnhc,hvc->bnhv", u, self.w_uv)  # [B, n, H, dv]
        return self.attn.o_proj(o.reshape(B, n, H * self.spec.dv))

    def attend(self, x: torch.Tensor, cache: LayerCache, S: int, fused=None) -> torch.Tensor:
        """
        Attention output of new tokens x [B, n, d] whose rows are the cache's rows S-n..S-1: [B, n, d].
        `fused`: for single-token latent steps, a callable taking latent_attention's arguments with q = qa [B, H, dc]
        and the positional query as a `rope` keyword (decode_triton.Rope; the checked fused_latent_attention), or
        None for the PyTorch path.
        """
        s = self.spec
        B, n, _ = x.shape
        if n > S:
            raise DecodeError(f"decode step: {n} new tokens but only {S} cached rows (append them first)")
        if cache.kind == "full-key":
            return self.output(self.full_key_attend(x, cache, S))
        self.check_latent_kind(cache.kind)
        invrms = cache.kind == "latent+invrms"
        kv = cache.kv[:, :S]
        rk = cache.rk[:, :S] if invrms else None
        content_only = invrms and not self.full
        if n == 1 and fused is not None:
            from .decode_triton import Rope

            # The kernel weights and rotates the positional query itself: at batch 1 the kernel that would do it
            # first costs, with its launch, a few percent of a long-context step.
            qa, qp, q_stat = self.parts_fn(x, invrms)  # [B, 1, H, dc], [B, 1, H, dr], [B, 1, H, w] or None
            rope = Rope(qp[:, 0], self.cos[S - 1], self.sin[S - 1], self.positional_weight)
            u = fused(qa[:, 0], kv, rk, s.dc, content_only, None if q_stat is None else q_stat[:, 0], s.qk_eps, rope=rope)[:, None]
            return self.output_fn(u.to(x.dtype))
        q, q_stat = self.query_fn(x, S - n, invrms)  # [B, n, H, dc+dr], [B, n, H, w] or None
        if n == 1:
            u = self.latent_fn(q[:, 0], kv, rk, s.dc, content_only, None if q_stat is None else q_stat[:, 0], s.qk_eps)[:, None]  # [B, 1, H, dc]
        else:
            u = self.latent_block(q, kv, rk, q_stat)
        return self.output_fn(u.to(x.dtype))

    def latent_block(self, q: torch.Tensor, kv: torch.Tensor, rk: Optional[torch.Tensor], q_stat: Optional[torch.Tensor]) -> torch.Tensor:
        """n > 1 new tokens (a prefill), causal within their block: q [B, n, H, dc+dr] -> u [B, n, H, dc]."""
        s = self.spec
        B, n, H, D = q.shape
        S = kv.shape[1]
        rq = None if rk is None else group_inv_rms(q_stat, s.G, s.qk_eps)  # [B, n, G]
        scores = latent_scores(q.reshape(B, n * H, D), kv, rk, rq, s.dc, rk is not None and not self.full)  # [B, n*H, S]
        masked = block_causal_mask(n, S, q.device)[None, :, None, :]  # [1, n, 1, S]
        scores = at_least_float32(scores.view(B, n, H, S)).masked_fill(masked, float("-inf"))
        p = torch.softmax(scores, dim=-1).to(kv.dtype).view(B, n * H, S)
        return (p @ kv[..., : s.dc]).view(B, n, H, s.dc)

    def full_key_attend(self, x: torch.Tensor, cache: LayerCache, S: int) -> torch.Tensor:
        """Scores against each head's explicit keys; the latent gives the values (W_UV absorbed): u [B, n, H, dc]."""
        s = self.spec
        B, n, _ = x.shape
        q = self.full_key_query(x, S - n).transpose(1, 2).to(cache.k.dtype)  # [B, H, n, dn+dr]
        scores = at_least_float32(q @ cache.k[:, :, :S].transpose(-1, -2))  # [B, H, n, S]
        if n > 1:
            scores = scores.masked_fill(block_causal_mask(n, S, x.device), float("-inf"))
        p = torch.softmax(scores, dim=-1).to(cache.c.dtype)
        u = p.reshape(B, s.H * n, S) @ cache.c[:, :S]  # [B, H*n, dc]
        return u.view(B, s.H, n, s.dc).transpose(1, 2)  # [B, n, H, dc]

    # --- speed ----------------------------------------------------------------------------------------------

    def compile(self, chunk: Optional[int] = None) -> None:
        """
        torch.compile the query, the PyTorch attention and the output (CUDA): fuses their elementwise work. The
        single-token attention is the chunked form (latent_attention_chunked) with `chunk` rows per chunk; by default
        2048 rows of a 2-byte cache, 1024 of a float32 one (about 2.4 MB of a DeepSeek-like cache), the fastest
        chunks on the H200 with the smallest rk overhead (python/tools/tune_decode.py; bench/NOTES.md).
        MLACTL_DECODE_CHUNKED=0 compiles the plain one-softmax form instead, for comparison.
        """
        self.query_fn = torch.compile(self.absorbed_query, dynamic=True)
        self.parts_fn = torch.compile(self.absorbed_query_parts, dynamic=True)
        self.output_fn = torch.compile(self.output, dynamic=True)
        if os.environ.get("MLACTL_DECODE_CHUNKED", "1") == "0":
            self.latent_fn = torch.compile(latent_attention, dynamic=True)
            return
        rows = chunk or (1024 if torch.finfo(self.dtype).bits >= 32 else 2048)
        self.latent_fn = functools.partial(torch.compile(latent_attention_chunked, dynamic=True), chunk=rows)

    def uncompile(self) -> None:
        self.query_fn, self.parts_fn, self.latent_fn, self.output_fn = self.absorbed_query, self.absorbed_query_parts, latent_attention, self.output

    def step_weight_bytes(self, kind: str) -> int:
        """
        Bytes of the weights one attend step reads, in their dtypes: the query projection, W_O, W_UV, and for the
        latent caches the absorbed W_UK (full-key's keys are explicit; its query needs no W_UK).
        """
        size = lambda t: t.numel() * t.element_size()  # noqa: E731
        a = self.attn
        names = ["q_a_proj", "q_b_proj"] if self.spec.dq > 0 else ["q_proj"]
        total = sum(size(getattr(a, n).weight) for n in names) + size(a.o_proj.weight) + size(self.w_uv)
        return total + (size(self.w_uk_absorbed) if kind != "full-key" else 0)


def compile_available(device: torch.device) -> bool:
    """torch.compile for the decode step: CUDA, a torch that has it, and not switched off (MLACTL_DECODE_COMPILE=0)."""
    return device.type == "cuda" and hasattr(torch, "compile") and os.environ.get("MLACTL_DECODE_COMPILE", "1") != "0"


# ---------------------------------------------------------------------------------------------------------------
# The whole model


class MLADecoder:
    """
    Incremental decoding of a whole model through one cache kind (IncrementalDecoder in src/model/transformer.ts):
    `feed` a prompt, then one token at a time; each call returns the logits of the tokens it was given.
    """

    def __init__(self, model: MLAForCausalLM, kind: str, batch: int, capacity: int, fused=None):
        spec = model.spec
        if kind not in CACHE_KINDS:
            raise DecodeError(f"--cache: unknown cache {kind!r} (choose from {', '.join(CACHE_KINDS)})")
        if kind not in caches_for(spec):
            raise DecodeError(f"--cache {kind}: cannot serve a {spec.variant} model (use {' or '.join(caches_for(spec))})")
        if capacity > spec.max_seq_len:
            raise DecodeError(f"decode: {capacity} positions exceed the model's max_seq_len {spec.max_seq_len}")
        weight = next(model.parameters())
        self.model, self.kind, self.capacity, self.fused = model, kind, capacity, fused
        cos, sin = model.model.rope_cos, model.model.rope_sin
        self.layers = [DecodeLayer(block.self_attn, spec, cos, sin) for block in model.model.layers]
        self.caches = [LayerCache(kind, spec, batch, capacity, weight.device, weight.dtype) for _ in model.model.layers]
        self.length = 0

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, n] at positions length..length+n-1 -> logits [B, n, V]."""
        n = tokens.shape[1]
        start = self.length
        if start + n > self.capacity:
            raise DecodeError(f"decode: {start + n} positions exceed this decoder's capacity {self.capacity}")
        m = self.model.model
        x = m.embed_tokens(tokens)  # [B, n, d]
        for block, layer, cache in zip(m.layers, self.layers, self.caches):
            h = block.input_layernorm(x)
            layer.append(cache, h, start)
            x = x + layer.attend(h, cache, start + n, self.fused if n == 1 else None)
            x = x + block.mlp(block.post_attention_layernorm(x))
        self.length += n
        return F.linear(m.norm(x), self.model.head_weight())

    def cache_shapes(self) -> Dict[str, List[int]]:
        """Layer 0's cache, name -> shape."""
        return self.caches[0].shapes(self.length)


def fused_attention_for(device: torch.device, dtype: torch.dtype, spec: ModelSpec, log=None):
    """The fused Triton attention when it runs here and passes its self-check, else None (the PyTorch path)."""
    if device.type != "cuda" or os.environ.get("MLACTL_DECODE_FUSED", "1") == "0":
        return None
    from . import decode_triton

    return decode_triton.checked_kernel(device, dtype, spec, log)


@torch.no_grad()
def greedy_generate(model: MLAForCausalLM, prompt: Sequence[int], max_tokens: int, kind: str, eos: Optional[int], vocab_limit: int, fused=None) -> dict:
    """
    Greedy decoding, as `generate` with temperature 0 in src/inference/generate.ts: ids >= vocab_limit (embedding
    rows past the tokenizer) are never chosen; ties go to the lowest id (torch.argmax returns the first maximum).
    """
    if max_tokens < 1:
        raise DecodeError(f"--max-tokens: must be a positive integer, got {max_tokens}")
    if not prompt:
        raise DecodeError("--prompt: at least one token id")
    device = next(model.parameters()).device
    capacity = len(prompt) + max_tokens - 1  # every token but the last generated one is fed
    decoder = MLADecoder(model, kind, 1, capacity, fused)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tokens: List[int] = []
    stopped = "max-tokens"
    feed = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    start = time.perf_counter()
    prefill_ms = 0.0
    for i in range(max_tokens):
        t0 = time.perf_counter()
        logits = decoder.feed(feed)[0, -1].float()  # [V]
        if vocab_limit < logits.shape[0]:
            logits[vocab_limit:] = float("-inf")
        nxt = int(logits.argmax().item())  # the one host read per token: the next input depends on it
        if i == 0:
            sync()
            prefill_ms = (time.perf_counter() - t0) * 1000
        tokens.append(nxt)
        if eos is not None and nxt == eos:
            stopped = "eos"
            break
        feed = torch.tensor([[nxt]], dtype=torch.long, device=device)
    sync()
    total_ms = (time.perf_counter() - start) * 1000
    steps = len(tokens) - 1
    return {
        "tokens": tokens,
        "stopped": stopped,
        "cache": kind,
        "cache_shapes": decoder.cache_shapes(),
        "attention": "fused" if fused is not None else "torch",
        "prefill_ms": prefill_ms,
        "ms_per_token": (total_ms - prefill_ms) / steps if steps > 0 else None,
        "total_ms": total_ms,
    }


# ---------------------------------------------------------------------------------------------------------------
# Verification (`mlactl verify --engine torch`)


def max_relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| over every entry (maxRelativeError in src/model/reference.ts), in float64."""
    a64, b64 = a.double(), b.double()
    den = float(b64.abs().max())
    num = float((a64 - b64).abs().max())
    return num / den if den > 0 else num


@torch.no_grad()
def decode_logits(model: MLAForCausalLM, kind: str, tokens: List[int], prefill: int, fused=None) -> torch.Tensor:
    """Logits [T, V] of a decoder fed the first `prefill` tokens at once, then one token per call."""
    device = next(model.parameters()).device
    decoder = MLADecoder(model, kind, 1, len(tokens), fused)
    chunks = [tokens[:prefill]] + [[t] for t in tokens[prefill:]]
    out = [decoder.feed(torch.tensor([chunk], dtype=torch.long, device=device))[0] for chunk in chunks]
    return torch.cat(out)


@torch.no_grad()
def verify_model(model: MLAForCausalLM, tokens: List[int], tolerance: float, reference_param_limit: int, fused=None) -> dict:
    """
    Every form that must agree on `tokens` (src/inference/verify.ts, verifyModel): the training form, each cache
    the variant has (the fused kernel's too when given), and below `reference_param_limit` parameters the training
    form of a float64 copy of the model. Pairs: each form against the reference, each cache against training.
    """
    import copy

    from .model import count_parameters

    spec = model.spec
    if len(tokens) < 2 or len(tokens) > spec.max_seq_len:
        raise DecodeError(f"--tokens: need 2..{spec.max_seq_len} (max_seq_len) tokens, got {len(tokens)}")
    device = next(model.parameters()).device
    prefill = len(tokens) // 2
    parameters = count_parameters(spec)
    batch = torch.tensor([tokens], dtype=torch.long, device=device)
    logits: Dict[str, torch.Tensor] = {"training": model(batch).logits[0].float()}
    caches = list(caches_for(spec))
    forms = list(caches)
    for kind in caches:
        logits[kind] = decode_logits(model, kind, tokens, prefill).float()
        if fused is not None and kind != "full-key":
            name = f"{kind} (fused)"
            logits[name] = decode_logits(model, kind, tokens, prefill, fused).float()
            forms.append(name)
    use_reference = parameters < reference_param_limit
    if use_reference:
        reference = copy.deepcopy(model).double()
        logits["reference"] = reference(batch).logits[0]
        del reference
    pairs = ([(f, "reference") for f in ["training"] + forms] if use_reference else []) + [(f, "training") for f in forms]
    comparisons = []
    for form, against in pairs:
        err = max_relative_error(logits[form], logits[against])
        comparisons.append({"pair": f"{form} vs {against}", "form": form, "against": against, "max_rel_error": err, "pass": err <= tolerance})
    note = (f"float64 reference run (the model in double; {parameters} parameters < {reference_param_limit})" if use_reference
            else f"float64 reference skipped: {parameters} parameters >= {reference_param_limit}")
    return {
        "variant": spec.variant,
        "parameters": parameters,
        "tokens": len(tokens),
        "prefill": prefill,
        "tolerance": tolerance,
        "forms": list(logits.keys()),
        "reference": {"run": use_reference, "note": note},
        "comparisons": comparisons,
        "pass": all(c["pass"] for c in comparisons),
    }


def log_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
