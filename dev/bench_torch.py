"""dev/bench_torch.py — the PyTorch + transformers reference of dev/bench_cuda.sh's step.

tinyllama-1.1b shape with random weights; the student's seven linears of every layer fake-quantized
INT-Asym 2-bit, group 128 (the formula of quant.h's int_asym_*, BitDistiller Du et al. 2024), with
BitDistiller's backward (--ste bitdistiller: straight through the rounding, the scale not detached)
or the plain one (--ste plain: dL/dW = dL/dW^); fp32 master weights under bf16 autocast; a bf16 copy
as teacher; CAKLD (gamma 0.5) summed over positions, mean over sequences; fused AdamW; batch 8 x
1024. Modes: eager; compile (torch.compile of each decoder layer, fake quantizer included, and of
the loss; compiling the whole step took longer than a 250 s run); eager-ckpt (eager with
transformers' gradient checkpointing of every decoder layer, as BitDistiller trains).
Prints tokens/s and peak GPU memory of each.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=6)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq", type=int, default=1024)
p.add_argument("--modes", default="eager,compile,eager-ckpt")
p.add_argument("--ste", default="bitdistiller", choices=["bitdistiller", "plain"])
args = p.parse_args()


def fake_quant(w, bits=2, g=128):
    x = w.reshape(-1, g)
    mx, mn = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
    qmax = 2**bits - 1
    s = (mx - mn).clamp(min=1e-5) / qmax
    z = (-torch.round(mn / s)).clamp(0, qmax)
    if args.ste == "plain":
        s = s.detach()
    r = x / s
    rr = torch.sign(r) * torch.floor(r.abs() + 0.5)  # ties away from zero
    q = ((rr - r).detach() + r + z.detach()).clamp(0, qmax)  # straight through the rounding
    wq = ((q - z.detach()) * s).reshape(w.shape)
    return wq if args.ste == "bitdistiller" else w + (wq - w).detach()


class QLinear(torch.nn.Linear):
    def forward(self, x):
        return F.linear(x, fake_quant(self.weight).to(x.dtype))


def cakld(zs, zt, gamma=0.5):
    ls, lt = F.log_softmax(zs.float(), -1), F.log_softmax(zt.float(), -1)
    ps, pt = ls.exp(), lt.exp()
    rkl = (ps * (ls - lt)).sum(-1)
    fkl = (pt * (lt - ls)).sum(-1)
    return (gamma * rkl + (1 - gamma) * fkl).sum() / zs.shape[0]


def run(mode):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    student = LlamaForCausalLM(cfg).cuda()
    teacher = LlamaForCausalLM(cfg).cuda().to(torch.bfloat16).eval()
    teacher.load_state_dict(student.state_dict())
    for name, m in student.named_modules():
        if isinstance(m, torch.nn.Linear) and ".layers." in name:
            m.__class__ = QLinear
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)
    if mode == "eager-ckpt":
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def step(ids):
        with torch.no_grad():
            zt = teacher(input_ids=ids, use_cache=False).logits
        with torch.autocast("cuda", dtype=torch.bfloat16):
            zs = student(input_ids=ids, use_cache=False).logits
        loss = cakld(zs, zt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if mode == "compile":  # each decoder layer and the loss (one graph serves the 22 layers alike)
        for mdl in (student, teacher):
            for layer in mdl.model.layers:
                layer.compile()
        global cakld
        cakld = torch.compile(cakld)
    ids = torch.randint(0, 32000, (args.batch, args.seq), device="cuda")
    t0 = time.time()
    for _ in range(2):  # warm-up (and compilation)
        step(ids)
    torch.cuda.synchronize()
    warm = time.time() - t0
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(args.steps):
        loss = step(ids)
    torch.cuda.synchronize()
    dt = (time.time() - t0) / args.steps
    tps = args.batch * args.seq / dt
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"torch {mode}: {tps:.0f} tokens/s, {dt:.3f} s/step, peak GPU memory {peak:.1f} GiB allocated "
          f"({torch.cuda.max_memory_reserved() / 2**30:.1f} GiB reserved), warm-up {warm:.0f} s, loss {loss.item():.4f}")
    del student, teacher, opt
    torch.cuda.empty_cache()


for mode in args.modes.split(","):
    run(mode)
