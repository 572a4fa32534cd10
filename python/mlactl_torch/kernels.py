"""An optional Triton kernel: per-head maximum attention logits without materialising the score matrix.

The plain PyTorch pass (model.max_attention_logits) writes every block of scores to memory and reads it back for
the max; at paper-400m shapes that traffic cost about a fifth of a training step, and QK-clip needs the maxima every
step. This kernel walks the causal blocks like a flash-attention forward without softmax or values: one q block
stays in registers, k blocks stream past, the dot products accumulate in float32 and only a running row max
survives. Used for bf16/fp16 q and k on CUDA when Triton imports and passes a self-check; everything else takes the
PyTorch pass.
"""
from __future__ import annotations

import sys

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs, and GPUs without Triton: the PyTorch pass serves
    triton = None

if triton is not None:

    @triton.jit
    def _masked_max_qk(Q, K, Out, T, H, D, sqb, sqh, sqt, sqd, skb, skh, skt, skd, n_blocks,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        """Out[b*H + h, m] = max over rows t of block m and keys j <= t of q_t · k_j (unscaled)."""
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        feats = tl.arange(0, BLOCK_D)
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqt + feats[None, :] * sqd,
                    mask=(rows[:, None] < T) & (feats[None, :] < D), other=0.0)  # [BLOCK_M, BLOCK_D]
        best = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        end = tl.minimum((pid_m + 1) * BLOCK_M, T)  # keys past the block's last row are all in the future
        for start in range(0, end, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            k = tl.load(K + b * skb + h * skh + cols[None, :] * skt + feats[:, None] * skd,
                        mask=(cols[None, :] < T) & (feats[:, None] < D), other=0.0)  # [BLOCK_D, BLOCK_N]
            s = tl.dot(q, k)  # [BLOCK_M, BLOCK_N], float32 accumulation
            s = tl.where((cols[None, :] <= rows[:, None]) & (cols[None, :] < T), s, float("-inf"))
            best = tl.maximum(best, tl.max(s, axis=1))
        best = tl.where(rows < T, best, float("-inf"))
        tl.store(Out + pid_bh * n_blocks + pid_m, tl.max(best, axis=0))


def supported(q: torch.Tensor) -> bool:
    return triton is not None and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16)


def max_attention_logits(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """S_h for q, k [B, H, T, D] (any strides): [H] float32, as model.max_attention_logits."""
    B, H, T, D = q.shape
    block_m, block_n = 64, 64
    n_blocks = triton.cdiv(T, block_m)
    out = torch.empty(B * H, n_blocks, dtype=torch.float32, device=q.device)
    _masked_max_qk[(n_blocks, B * H)](q, k, out, T, H, D, *q.stride(), *k.stride(), n_blocks,
                                       BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(D)), num_warps=4)
    return out.view(B, H, n_blocks).amax(dim=(0, 2)) * scale


def self_check(device: torch.device, dtype: torch.dtype, D: int) -> bool:
    """Run the kernel once against the PyTorch pass on a small ragged input; False (with a note on stderr) if it fails."""
    if triton is None or device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return False
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        q = torch.randn(2, 100, 3, D, device=device, generator=gen).to(dtype).transpose(1, 2)  # the forward's layout
        k = torch.randn(2, 100, 3, D, device=device, generator=gen).to(dtype).transpose(1, 2)
        want = ((q.float() @ k.float().transpose(-1, -2)).masked_fill(torch.ones(100, 100, dtype=torch.bool, device=device).triu(1), float("-inf"))).amax(dim=(0, 2, 3))
        got = max_attention_logits(q, k, 1.0)
        return bool(torch.allclose(got, want, rtol=1e-3, atol=1e-3))
    except Exception as e:  # a Triton or driver problem must not stop training: the PyTorch pass is exact too
        print(f"mlactl_torch: Triton max-logit kernel unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); using the PyTorch pass", file=sys.stderr)
        return False
