"""dev/bench_torch_cpu.py — PyTorch CPU eager fp32, the step that `./train --init bench-100m --bench` times.

bench-100m (dim 768, MLP 2048, 12 layers, 12 heads, 4 KV heads, head_dim 64, vocab 32000, tied
embeddings), random weights (normal, std 0.02) and random tokens; one step = forward, cross-entropy
against random targets, backward, AdamW (torch.optim.AdamW, foreach), batch 4 x 256 by default,
threads as given (2). The model is written out here in plain torch (RMSNorm, rotate-half RoPE,
grouped-query causal attention through scaled_dot_product_attention, SwiGLU), so only torch is needed.
Prints the best step time and tokens/s, then one JSON line. dev/bench_cpu.sh runs it beside ./train.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--steps", type=int, default=2)
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

D, F_, L, H, KV, HD, V = 768, 2048, 12, 12, 4, 64, 32000


def param(*shape):
    return torch.nn.Parameter(torch.randn(*shape) * 0.02)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_norm, self.mlp_norm = torch.nn.Parameter(torch.ones(D)), torch.nn.Parameter(torch.ones(D))
        self.wq, self.wk, self.wv, self.wo = param(H * HD, D), param(KV * HD, D), param(KV * HD, D), param(D, H * HD)
        self.wgate, self.wup, self.wdown = param(F_, D), param(F_, D), param(D, F_)


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):  # x [B, heads, T, HD], Hugging Face's rotate-half layout
    x1, x2 = x[..., : HD // 2], x[..., HD // 2 :]
    return x * cos + torch.cat((-x2, x1), -1) * sin


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = param(V, D)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(L))
        self.final_norm = torch.nn.Parameter(torch.ones(D))
        inv = 1.0 / (10000.0 ** (torch.arange(0, HD, 2).float() / HD))
        ang = torch.outer(torch.arange(args.seq).float(), inv)
        ang = torch.cat((ang, ang), -1)
        self.register_buffer("cos", ang.cos())
        self.register_buffer("sin", ang.sin())

    def forward(self, ids):
        B, T = ids.shape
        x = self.embed[ids]
        for l in self.layers:
            h = rmsnorm(x, l.attn_norm)
            q = F.linear(h, l.wq).view(B, T, H, HD).transpose(1, 2)
            k = F.linear(h, l.wk).view(B, T, KV, HD).transpose(1, 2)
            v = F.linear(h, l.wv).view(B, T, KV, HD).transpose(1, 2)
            q, k = rope(q, self.cos, self.sin), rope(k, self.cos, self.sin)
            k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, H * HD), l.wo)
            h = rmsnorm(x, l.mlp_norm)
            x = x + F.linear(F.silu(F.linear(h, l.wgate)) * F.linear(h, l.wup), l.wdown)
        return F.linear(rmsnorm(x, self.final_norm), self.embed)  # tied lm_head


model = Model()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
ids = torch.randint(0, V, (args.batch, args.seq))
targets = torch.randint(0, V, (args.batch, args.seq))
best = float("inf")
for s in range(args.steps + 1):  # step 0 warms up
    t0 = time.time()
    loss = F.cross_entropy(model(ids).view(-1, V), targets.view(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    dt = time.time() - t0
    print(f"torch step {s}/{args.steps}: {dt:.3f} s{' (warm-up)' if s == 0 else ''}", flush=True)
    if s > 0:
        best = min(best, dt)
tps = args.batch * args.seq / best
print(f"torch {torch.__version__} CPU eager fp32, {args.threads} threads: best {best:.3f} s, {tps:.0f} tokens/s")
print(json.dumps({"torch": torch.__version__, "threads": args.threads, "batch": args.batch, "seq": args.seq,
                  "step_s": round(best, 4), "tokens_per_s": round(tps, 1)}))
