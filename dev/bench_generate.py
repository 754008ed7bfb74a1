"""dev/bench_generate.py — Hugging Face `generate` on the model shape of dev/bench_cuda.sh's
generation benchmark, the reference for train_cu --generate-data's tokens/s.

bench-100m shape (dim 768, hidden 2048, 12 layers, 12 heads, 4 KV heads, vocab 32000, tied
embeddings) with random weights in bf16; one batch of the prompts of PROMPTS (one per line, a
token per byte as the demo's byte tokenizer gives them), left-padded; greedy, exactly --max-new
new tokens each (EOS does not stop it: random weights would rarely pick it anyway), KV cache on.
Prints the new tokens per second of the timed runs after one warm-up.
"""
import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("prompts")
p.add_argument("--max-new", type=int, default=64)
p.add_argument("--runs", type=int, default=3)
args = p.parse_args()

lines = [ln.rstrip("\n").encode() for ln in open(args.prompts, encoding="utf-8") if ln.strip()]
B, longest = len(lines), max(len(ln) for ln in lines)
ids = torch.zeros(B, longest, dtype=torch.long)
mask = torch.zeros(B, longest, dtype=torch.long)
for b, ln in enumerate(lines):  # left padding: the new tokens of every row start at the same column
    ids[b, longest - len(ln):] = torch.tensor(list(ln))
    mask[b, longest - len(ln):] = 1
ids, mask = ids.cuda(), mask.cuda()

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=1024,
                  tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
model = LlamaForCausalLM(cfg).cuda().to(torch.bfloat16).eval()


def run():
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=args.max_new,
                             min_new_tokens=args.max_new, pad_token_id=0)
    torch.cuda.synchronize()
    return out.shape[1] - longest


run()  # warm-up
t0 = time.time()
for _ in range(args.runs):
    new = run()
dt = (time.time() - t0) / args.runs
print(f"HF generate: {B} prompts x {new} new tokens, {B * new / dt:.0f} new tokens/s ({dt:.3f} s a batch)")
