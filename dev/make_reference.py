#!/usr/bin/env python3
"""Reference fixtures from Hugging Face transformers, for test_reference.c.

Runs on the GPU machine (torch + transformers), on the CPU in fp32, with fixed seeds. For each
small random LlamaForCausalLM in CONFIGS it writes OUT_DIR/<name>/:
  hf_f32/, hf_bf16/   save_pretrained of the same model in fp32 and in bf16 (every weight is
                      rounded to a bf16-representable value first, so both hold the same numbers)
  hf_sharded/         (gqa_tied only) the fp32 model split into several shards plus
                      model.safetensors.index.json
  hf_altcfg/          (llama3_rope only) the bf16 folder with config.json rewritten in the form the
                      installed transformers does NOT write: classic rope_theta / rope_scaling /
                      torch_dtype  <->  transformers >= 5 rope_parameters / dtype
  ref.safetensors     input_ids I32 [B,T] (random ids), logits F32 [B,T,V], loss F32 [1]: HF's
                      loss with labels = input_ids, i.e. the mean cross-entropy of predicting
                      ids[b,t+1] from positions t < T-1 (B*(T-1) terms), eager attention, fp32
  grads.safetensors   d loss / d parameter, F32, under the parameters' own names
                      (model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight, ...,
                      lm_head.weight when untied; a tied model has only the embedding, whose
                      gradient is the sum of its two uses)
and OUT_DIR/VERSIONS.txt. Before it finishes it loads every folder back with from_pretrained and
checks that it reproduces the reference logits exactly (the other config form included), and
that the loss is the shifted mean cross-entropy above; it exits 1 if anything disagrees.

What each configuration is there to catch:
  mha_untied   plain multi-head attention, separate LM head
  gqa_tied     grouped-query attention (4 heads share 2 K/V heads), LM head = embedding
  llama3_rope  Llama-3 RoPE scaling with rope_theta 500000 and one K/V head; the sizes put RoPE
               frequencies in all three regimes of the scaling (kept, blended, divided by factor)
  eps1e6       rms_norm_eps 1e-6 and head_dim (16) != hidden_size / heads (8)

usage: python3 dev/make_reference.py OUT_DIR      (e.g. tests/fixtures)
"""
import copy, inspect, json, math, os, platform, shutil, sys

import safetensors
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

B, T = 2, 20
CONFIGS = {
    "mha_untied": dict(hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=64, tie_word_embeddings=False, rope_theta=10000.0),
    "gqa_tied": dict(hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=80, tie_word_embeddings=True, rope_theta=10000.0),
    # head_dim 32 with theta 500000: RoPE wavelengths 2*pi/inv_freq = 6.3, 14.3, 32.4, 73.6, ...
    # against original_max_position_embeddings 32 (high band < 32/4 = 8 kept, low band > 32
    # divided by 8, in between blended): one kept, one blended, the rest divided.
    "llama3_rope": dict(hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, head_dim=32, vocab_size=64, tie_word_embeddings=False,
                        rope_theta=500000.0,
                        rope=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=32)),
    "eps1e6": dict(hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, vocab_size=64, tie_word_embeddings=False,
                   rope_theta=10000.0, rms_norm_eps=1e-6),
}
SHARDED, ALTCFG = "gqa_tied", "llama3_rope"
V5 = int(transformers.__version__.split(".")[0]) >= 5


def make_config(spec):
    """LlamaConfig in whichever form the installed transformers takes."""
    spec = dict(spec)
    rope = spec.pop("rope", None)
    theta = spec.pop("rope_theta")
    common = dict(max_position_embeddings=64, rms_norm_eps=spec.pop("rms_norm_eps", 1e-5),
                  bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:  # transformers >= 5
        rp = dict(rope_type="default", rope_theta=theta) if rope is None else dict(rope, rope_theta=theta)
        return LlamaConfig(rope_parameters=rp, **common, **spec)
    return LlamaConfig(rope_theta=theta, rope_scaling=rope, **common, **spec)


def other_config_form(path):
    """Rewrite config.json in place in the form the installed transformers did not write."""
    with open(path) as f:
        c = json.load(f)
    if "rope_parameters" in c:  # transformers >= 5 form -> classic
        rp = dict(c.pop("rope_parameters"))
        c["rope_theta"] = rp.pop("rope_theta")
        c["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
        c["torch_dtype"] = c.pop("dtype", "float32")
    else:  # classic -> transformers >= 5 form
        rp = dict(c.pop("rope_scaling", None) or {"rope_type": "default"})
        rp["rope_theta"] = c.pop("rope_theta")
        c["rope_parameters"] = rp
        c["dtype"] = c.pop("torch_dtype", "float32")
    with open(path, "w") as f:
        json.dump(c, f, indent=2)


def randomize(model, gen):
    """Weights big enough that nothing is trivial, then rounded to bf16-representable values.
    Norm weights ~ 1 + 0.2 N(0,1) (so their gradients matter), embeddings 0.05 N(0,1) (small, as
    in trained models, so rms_norm_eps is felt), linear weights 0.1 N(0,1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=gen)
            if "norm" in name:
                v = 1.0 + 0.2 * z
            elif "embed_tokens" in name:
                v = 0.05 * z
            else:
                v = 0.1 * z
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def load_logits(path, ids):
    """Logits of a saved folder, loaded back by transformers itself in fp32."""
    kw = dict(attn_implementation="eager")
    kw["dtype" if V5 else "torch_dtype"] = torch.float32
    m = LlamaForCausalLM.from_pretrained(path, **kw).eval()
    with torch.no_grad():
        return m(input_ids=ids).logits


def rope_regimes(cfg, spec):
    """How many RoPE frequencies fall in each Llama-3 regime (kept / blended / divided)."""
    rope = spec.get("rope")
    if not rope:
        return None
    hd = spec.get("head_dim", spec["hidden_size"] // spec["num_attention_heads"])
    orig = rope["original_max_position_embeddings"]
    hi, lo = orig / rope["high_freq_factor"], orig / rope["low_freq_factor"]
    waves = [2 * math.pi * spec["rope_theta"] ** (2 * i / hd) for i in range(hd // 2)]
    return dict(kept=sum(w < hi for w in waves), blended=sum(hi <= w <= lo for w in waves),
                divided=sum(w > lo for w in waves))


def make_fixture(out, name, spec, problems):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(0)  # LlamaForCausalLM's own init draws from it (then overwritten)
    gen = torch.Generator().manual_seed(1000 + list(CONFIGS).index(name))
    cfg = make_config(spec)
    model = LlamaForCausalLM(cfg).float().eval()
    randomize(model, gen)
    V = cfg.vocab_size

    ids = torch.randint(0, V, (B, T), generator=gen)
    ids[0, 0], ids[1, T - 1] = V - 1, 0  # the first and last rows of the embedding are used
    out_ = model(input_ids=ids, labels=ids)
    out_.loss.backward()
    logits = out_.logits.detach().float().contiguous()
    loss = out_.loss.detach().reshape(1).float()

    # HF's loss must be what test_reference.c computes: mean CE of ids[:, 1:] from logits[:, :-1]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V).double(), ids[:, 1:].reshape(-1)).float()
    if abs(ce.item() - loss.item()) > 1e-6 * abs(ce.item()):
        problems.append(f"{name}: HF loss {loss.item()} != shifted mean CE {ce.item()}")

    grads = {pn: p.grad.detach().float().contiguous() for pn, p in model.named_parameters()}
    if spec["tie_word_embeddings"] == ("lm_head.weight" in grads):
        problems.append(f"{name}: lm_head.weight in the gradients does not match tie_word_embeddings")
    for pn, g in grads.items():
        if not torch.isfinite(g).all() or g.abs().max() == 0:
            problems.append(f"{name}: gradient of {pn} is zero or not finite")

    save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits, "loss": loss},
              os.path.join(d, "ref.safetensors"))
    save_file(grads, os.path.join(d, "grads.safetensors"))

    model.save_pretrained(os.path.join(d, "hf_f32"), safe_serialization=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(os.path.join(d, "hf_bf16"), safe_serialization=True)
    if name == SHARDED:
        model.save_pretrained(os.path.join(d, "hf_sharded"), safe_serialization=True, max_shard_size="16KB")
    if name == ALTCFG:
        alt = os.path.join(d, "hf_altcfg")
        shutil.copytree(os.path.join(d, "hf_bf16"), alt)
        other_config_form(os.path.join(alt, "config.json"))

    # every folder, loaded back by transformers, must give exactly these logits
    variants = sorted(v for v in os.listdir(d) if v.startswith("hf_"))
    for v in variants:
        err = (load_logits(os.path.join(d, v), ids) - logits).abs().max().item()
        print(f"  {name}/{v}: reloaded by transformers, max |logits - ref| = {err:.3g}")
        if err > 1e-6 * logits.abs().max().item():
            problems.append(f"{name}/{v}: reloaded logits differ from the reference by {err}")
    if name == SHARDED and not os.path.exists(os.path.join(d, "hf_sharded", "model.safetensors.index.json")):
        problems.append(f"{name}/hf_sharded: no model.safetensors.index.json (not sharded)")

    n_params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n_params} parameters, loss {loss.item():.6f}, logits max |.| {logits.abs().max().item():.3f}, "
          f"{len(grads)} gradient tensors, folders {variants}, rope regimes {rope_regimes(cfg, spec)}")


def main(out):
    torch.use_deterministic_algorithms(True)
    versions = (f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
                f"safetensors {safetensors.__version__}\npython {platform.python_version()}\n")
    print(versions, end="")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "VERSIONS.txt"), "w") as f:
        f.write(versions)
    problems = []
    for name, spec in CONFIGS.items():
        make_fixture(out, name, spec, problems)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print(f"fixtures: {total} bytes under {out}")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"))
