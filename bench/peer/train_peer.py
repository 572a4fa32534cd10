"""A plain PyTorch MLA training step with the shapes of an mlactl preset: the peer that `mlactl train --engine torch`
is measured against in the same run (bench/gpu-torch.sh). Written from the design note alone, sharing no code with
mlactl: bf16 autocast, fused SDPA, torch.compile, fused AdamW, random tokens. Prints one JSON line.

    python bench/peer/train_peer.py --preset paper-400m --batch 16 --steps 30 [--qk-norm]
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "gpu-small": dict(V=50304, d=512, L=8, H=8, dc=128, dn=64, dr=32, dv=64, ff=1408, T=512),
    "paper-400m": dict(V=50304, d=1024, L=24, H=16, dc=256, dn=64, dr=32, dv=64, ff=2816, T=2048),
}


def rotate(x, cos, sin):  # adjacent pairs (2i, 2i+1) of the last axis
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, p, qk_norm):
        super().__init__()
        self.p, self.qk_norm = p, qk_norm
        H, dn, dr, dc, dv, d = p["H"], p["dn"], p["dr"], p["dc"], p["dv"], p["d"]
        self.wq = nn.Linear(d, H * (dn + dr), bias=False)
        self.wdkv = nn.Linear(d, dc + dr, bias=False)
        self.kv_norm = nn.RMSNorm(dc)
        self.wukv = nn.Linear(dc, H * (dn + dv), bias=False)
        self.wo = nn.Linear(H * dv, d, bias=False)
        if qk_norm:
            self.q_norm, self.k_norm = nn.RMSNorm(dn + dr), nn.RMSNorm(dn + dr)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, dn, dr, dc, dv = (self.p[k] for k in ("H", "dn", "dr", "dc", "dv"))
        q = self.wq(x).view(B, T, H, dn + dr)
        c, kp = self.wdkv(x).split([dc, dr], -1)
        kv = self.wukv(self.kv_norm(c)).view(B, T, H, dn + dv)
        kn, v = kv.split([dn, dv], -1)
        k = torch.cat([kn, kp.unsqueeze(2).expand(B, T, H, dr)], -1)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = torch.cat([q[..., :dn], rotate(q[..., dn:], cos, sin)], -1).transpose(1, 2)
        k = torch.cat([k[..., :dn], rotate(k[..., dn:], cos, sin)], -1).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True, scale=1 / math.sqrt(dn + dr))
        return self.wo(o.transpose(1, 2).reshape(B, T, H * dv))


class Block(nn.Module):
    def __init__(self, p, qk_norm):
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(p["d"]), nn.RMSNorm(p["d"])
        self.attn = Attention(p, qk_norm)
        self.gate = nn.Linear(p["d"], p["ff"], bias=False)
        self.up = nn.Linear(p["d"], p["ff"], bias=False)
        self.down = nn.Linear(p["ff"], p["d"], bias=False)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.n1(x), cos, sin)
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, p, qk_norm):
        super().__init__()
        self.emb = nn.Embedding(p["V"], p["d"])
        self.blocks = nn.ModuleList(Block(p, qk_norm) for _ in range(p["L"]))
        self.norm = nn.RMSNorm(p["d"])
        self.head = nn.Linear(p["d"], p["V"], bias=False)
        t = torch.arange(p["T"], dtype=torch.float64)[:, None] * 10000.0 ** (-torch.arange(0, p["dr"], 2, dtype=torch.float64) / p["dr"])
        self.register_buffer("cos", t.cos().float()[:, None, :], persistent=False)  # [T, 1, dr/2]
        self.register_buffer("sin", t.sin().float()[:, None, :], persistent=False)

    def forward(self, idx, targets):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="paper-400m", choices=PRESETS)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--qk-norm", action="store_true")
    a = ap.parse_args()
    p = PRESETS[a.preset]
    torch.manual_seed(0)
    dev = "cuda"
    model = Model(p, a.qk_norm).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step = torch.compile(model)
    tokens = torch.randint(0, p["V"], (a.batch, p["T"] + 1), device=dev)
    x, y = tokens[:, :-1], tokens[:, 1:]

    def one():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.time()
    for _ in range(a.warmup):
        one()
    torch.cuda.synchronize()
    warm = time.time() - t0
    t0 = time.time()
    for _ in range(a.steps):
        loss = one()
    loss.item()
    dt = time.time() - t0
    n = a.batch * p["T"] * a.steps
    print(json.dumps({"peer": a.preset, "qk_norm": a.qk_norm, "batch": a.batch, "tokens_per_s": round(n / dt), "ms_per_step": round(1000 * dt / a.steps, 1), "warmup_s": round(warm, 1), "gpu": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
