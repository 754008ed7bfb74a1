#!/usr/bin/env python3
"""Reference gradients for quant.h's BitDistiller backward (tests/fixtures/ste/reference.json).

BitDistiller (Du et al. 2024) trains its student through the quantizer classes of its
quantization/quantizer.py, and autograd differentiates their forward as written:

  SteInt2AsymQuantizer / SteInt3AsymQuantizer (INT-Asym, `Round` a custom autograd Function)
      max_val, min_val = x.amax(dim=1), x.amin(dim=1)          per group, NOT detached
      scales = (max_val - min_val).clamp(min=1e-5) / max_int
      zeros  = (-torch.round(min_val / scales)).clamp_(0, max_int)   torch.round: gradient 0
      x = (torch.clamp(Round.apply(x / scales) + zeros, 0, max_int) - zeros) * scales
      Round: forward sign(u) floor(|u| + 0.5), backward the identity (straight-through)
  SteN2F3Quantizer (NF3-Asym)
      scale_pos, scale_neg = |max_val|, |min_val|              NOT detached
      q_pos = where(x >= 0, x, 0) / scale_pos,  q_neg = where(x < 0, x, 0) / scale_neg
      y = (round_n2f3(q) - q).detach() + q                     the level, straight-through
      x = y_pos * scale_pos + y_neg * scale_neg

This script re-implements those forwards op for op (the same ops in the same order, one class
for every INT width since SteInt2 and SteInt3 differ only in `bit`), runs them on seeded groups
(ties of the max and the min, weights the clamp cuts, all-positive and all-negative groups,
groups of 8 and whole rows), and stores w, a random dL/dŵ, the forward's ŵ and autograd's dL/dw
of L = Σ dL/dŵ · ŵ. Everything is fp32 on the CPU, as train.c computes; BitDistiller itself
quantizes the bf16 copy of the weight in bf16 (QLinear's compute_dtype), which the fixture
leaves out on purpose: it tests the backward's rule, not bf16 arithmetic.

Run from anywhere (python3 with torch, no network needed):
    python3 dev/make_ste_reference.py
then commit tests/fixtures/ste/reference.json; build/test_quant compares against it.
"""
import json
import os

import torch


class Round(torch.autograd.Function):
    """BitDistiller's Round: ties away from zero forward, identity backward."""

    @staticmethod
    def forward(ctx, u):
        sign = torch.sign(u)
        return sign * torch.floor(torch.abs(u) + 0.5)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone()


def ste_int_asym(x, bit, q_group_size):
    """SteInt{2,3}AsymQuantizer.forward with self.bit = bit."""
    org_w_shape = x.shape
    if q_group_size > 0:
        x = x.reshape(-1, q_group_size)
    else:
        x = x.reshape(-1, x.shape[-1])
    max_val = x.amax(dim=1, keepdim=True)
    min_val = x.amin(dim=1, keepdim=True)
    max_int = 2 ** bit - 1
    min_int = 0
    scales = (max_val - min_val).clamp(min=1e-5) / max_int
    zeros = (-torch.round(min_val / scales)).clamp_(min_int, max_int)
    x = (torch.clamp(Round.apply(x / scales) + zeros, min_int, max_int) - zeros) * scales
    return x.reshape(org_w_shape)


def round_n2f3(q_pos, q_neg, dev):
    """SteN2F3Quantizer.round_n2f3: the levels by thresholds, applied in its order."""
    one, zero = torch.tensor(1.0).to(dev), torch.tensor(0).to(dev)
    q_pos = torch.where(q_pos >= 0.8114928305149078, one, q_pos)
    q_pos = torch.where((q_pos < 0.8114928305149078) & (q_pos >= 0.5024898052215576), torch.tensor(0.6229856610298157).to(dev), q_pos)
    q_pos = torch.where((q_pos < 0.5024898052215576) & (q_pos >= 0.2826657369732857), torch.tensor(0.3819939494132996).to(dev), q_pos)
    q_pos = torch.where((q_pos < 0.2826657369732857) & (q_pos >= 0.0916687622666359), torch.tensor(0.1833375245332718).to(dev), q_pos)
    q_pos = torch.where(q_pos < 0.0916687622666359, zero, q_pos)
    q_neg = torch.where(q_neg >= -0.1234657019376755, zero, q_neg)
    q_neg = torch.where((q_neg < -0.1234657019376755) & (q_neg >= -0.39097706973552704), torch.tensor(-0.2469314038753510).to(dev), q_neg)
    q_neg = torch.where((q_neg < -0.39097706973552704) & (q_neg >= -0.7675113677978516), torch.tensor(-0.5350227355957031).to(dev), q_neg)
    q_neg = torch.where(q_neg < -0.7675113677978516, torch.tensor(-1.0).to(dev), q_neg)
    return q_pos, q_neg


def ste_n2f3(x, q_group_size):
    """SteN2F3Quantizer.forward."""
    org_w_shape = x.shape
    if q_group_size > 0:
        qx = x.reshape(-1, q_group_size)
    else:
        qx = x.reshape(-1, x.shape[-1])
    max_val = qx.amax(dim=1, keepdim=True)
    min_val = qx.amin(dim=1, keepdim=True)
    scale_pos = torch.abs(max_val)
    scale_neg = torch.abs(min_val)
    dev = qx.device
    x_pos = torch.where(qx >= 0, qx, torch.zeros_like(qx))
    x_neg = torch.where(qx < 0, qx, torch.zeros_like(qx))
    q_pos = x_pos / scale_pos
    q_neg = x_neg / scale_neg
    y_pos, y_neg = round_n2f3(q_pos, q_neg, dev)  # round_pass: the level, straight-through
    q_pos = (y_pos - q_pos).detach() + q_pos
    q_neg = (y_neg - q_neg).detach() + q_neg
    qx = q_pos * scale_pos + q_neg * scale_neg
    return qx.reshape(org_w_shape)


def int_groups(gen, bit, g, n_groups):
    """n_groups groups of g weights: random, one whose max weights the clamp cuts (min/s = -1.5
    is a tie of round_even: z = 2; max/s = qmax - 1.5 rounds away to qmax - 1: code qmax + 1),
    tied maxima and minima, all positive (z = 0, the top clamped), all negative (z = qmax)."""
    qmax = 2 ** bit - 1
    rows = []
    for k in range(n_groups):
        kind = k % 5
        if kind == 0:
            w = torch.randn(g, generator=gen) * 0.05
        elif kind == 1:  # s = 1 exactly
            w = torch.empty(g).uniform_(-1.4, qmax - 1.6, generator=gen)
            w[0] = w[3] = -1.5
            w[1] = qmax - 1.5
            w[2] = 0.25
        elif kind == 2:
            w = torch.randn(g, generator=gen)
            w[1] = w[5] = w.max() + 0.5
            w[2] = w[6] = w.min() - 0.5
        elif kind == 3:
            w = torch.empty(g).uniform_(1.0, 2.0, generator=gen)
        else:
            w = torch.empty(g).uniform_(-2.0, -1.0, generator=gen)
        rows.append(w)
    return torch.stack(rows)


def nf_groups(gen, g, n_groups):
    """Random, tied maxima and minima with an exact 0, all positive, all negative."""
    rows = []
    for k in range(n_groups):
        kind = k % 4
        w = torch.randn(g, generator=gen)
        if kind == 1:
            top = w.abs().max()
            w[0] = w[3] = top + 0.25
            w[1] = w[4] = -top - 0.5
            w[5] = 0.0
        elif kind == 2:
            w = w.abs() + 0.1
        elif kind == 3:
            w = -w.abs() - 0.1
        rows.append(w)
    return torch.stack(rows)


def case(name, method, bits, group, w, gen):
    w = w.clone().float().requires_grad_(True)
    dwq = torch.randn(w.shape, generator=gen)
    wq = ste_int_asym(w, bits, group) if method == "int" else ste_n2f3(w, group)
    (wq * dwq).sum().backward()
    assert torch.isfinite(wq).all() and torch.isfinite(w.grad).all(), name
    out, inn = w.shape
    return {"name": name, "method": method, "bits": bits, "group": group, "out": out, "in": inn,
            "w": w.detach().flatten().tolist(), "dwq": dwq.flatten().tolist(),
            "wq": wq.detach().flatten().tolist(), "dw": w.grad.flatten().tolist()}


def main():
    gen = torch.Generator().manual_seed(22)
    cases = []
    for bit in (2, 3, 4):  # 10 groups of 8: 2 rows of 40
        w = int_groups(gen, bit, 8, 10).reshape(2, 40)
        cases.append(case(f"int{bit} g8", "int", bit, 8, w, gen))
    w = int_groups(gen, 2, 24, 5)  # whole rows: 5 rows of 24
    cases.append(case("int2 per row", "int", 2, -1, w, gen))
    w = nf_groups(gen, 8, 8).reshape(2, 32)
    cases.append(case("nf3 g8", "nf3", 3, 8, w, gen))
    w = nf_groups(gen, 24, 4)
    cases.append(case("nf3 per row", "nf3", 3, -1, w, gen))

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    path = os.path.join(root, "tests", "fixtures", "ste", "reference.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
