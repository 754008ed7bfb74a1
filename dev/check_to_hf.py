# dev/check_to_hf.py — transformers loads what `./convert --to-hf` writes, and computes the same
# perplexity as train.c. Runs on the GPU machine (torch + transformers); see dev/check_to_hf.sh.
#
#   python3 dev/check_to_hf.py HF_DIR IDS_FILE T PPL_FROM_TRAIN_C
#
# Perplexity as train.c defines it: the token stream cut into floor(n/T) windows of T, each run
# from position 0, loss = mean cross-entropy of predicting tokens 1..T-1, ppl = exp(mean loss).
import math, sys
import torch, transformers
from transformers import AutoModelForCausalLM

hf_dir, ids_path, T, ppl_c = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
toks = [int(x) for x in open(ids_path).read().split()]
n = len(toks) // T
losses = []
with torch.no_grad():
    for w in range(n):
        x = torch.tensor([toks[w * T:(w + 1) * T]])
        logits = model(x).logits[0].double()
        losses.append(torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:]).item())
ppl = math.exp(sum(losses) / n)
rel = abs(ppl - ppl_c) / ppl_c
cfg = model.config
rope = getattr(cfg, "rope_scaling", None) or getattr(cfg, "rope_parameters", None)
print(f"{hf_dir}: transformers {transformers.__version__} {type(model).__name__}, tied={cfg.tie_word_embeddings}, "
      f"head_dim={getattr(cfg, 'head_dim', None)}, rope={rope}")
print(f"  ppl transformers {ppl:.6f} vs train.c {ppl_c:.6f} over {n} windows of {T}: rel. diff {rel:.2e}")
print("  ok" if rel < 1e-4 else "  FAIL")
sys.exit(0 if rel < 1e-4 else 1)
