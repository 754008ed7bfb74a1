#!/usr/bin/env python3
"""Reference fixtures from Hugging Face transformers, for test_reference.c.

Runs on the GPU machine (torch + transformers; CPU fp32 is enough). For each small random
LlamaForCausalLM below it writes tests/fixtures/<name>/:
  hf_f32/, hf_bf16/      save_pretrained of the same model in fp32 and bf16 (weights are rounded
                         to bf16 first, so both hold the same numbers)
  hf_sharded/            (one config) the same, split into several shards with an index
  hf_altcfg/             (one config) config.json rewritten in the other config form (classic
                         rope_theta/rope_scaling/torch_dtype vs transformers>=5 rope_parameters/dtype)
  ref.safetensors        input_ids I32 [B,T], logits F32 [B,T,V], loss F32 [1]: HF's loss with
                         labels = input_ids (mean CE over the B*(T-1) shifted positions), eager
                         attention, fp32
  grads.safetensors      d loss / d parameter, F32, under the parameters' own names
usage: python3 dev/make_reference.py OUT_DIR
"""
import inspect, json, os, shutil, sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

CONFIGS = {
    "mha_untied": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=96, tie_word_embeddings=False, rope_theta=10000.0),
    "gqa_tied": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=8,
                     num_key_value_heads=2, vocab_size=80, tie_word_embeddings=True, rope_theta=10000.0),
    "llama3_rope": dict(hidden_size=48, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=72, tie_word_embeddings=False, rope_theta=500000.0,
                        rope=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=16)),
    "eps1e6": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, vocab_size=64, tie_word_embeddings=False,
                   rope_theta=10000.0, rms_norm_eps=1e-6),
}
B, T = 2, 20


def make_config(spec):
    spec = dict(spec)
    rope = spec.pop("rope", None)
    theta = spec.pop("rope_theta")
    common = dict(max_position_embeddings=64, rms_norm_eps=spec.pop("rms_norm_eps", 1e-5),
                  bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    params = inspect.signature(LlamaConfig.__init__).parameters
    if "rope_parameters" in params:  # transformers >= 5
        rp = dict(rope_type="default", rope_theta=theta) if rope is None else dict(rope, rope_theta=theta)
        cfg = LlamaConfig(rope_parameters=rp, **common, **spec)
    else:
        cfg = LlamaConfig(rope_theta=theta, rope_scaling=rope, **common, **spec)
    return cfg


def other_config_form(path_in, path_out):
    """Rewrite config.json in the form the installed transformers did not write."""
    c = json.load(open(path_in))
    if "rope_parameters" in c:  # v5 -> classic
        rp = c.pop("rope_parameters")
        c["rope_theta"] = rp.pop("rope_theta")
        c["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
        c["torch_dtype"] = c.pop("dtype", "float32")
    else:  # classic -> v5
        rp = dict(c.pop("rope_scaling") or {"rope_type": "default"})
        rp["rope_theta"] = c.pop("rope_theta")
        c["rope_parameters"] = rp
        c["dtype"] = c.pop("torch_dtype", "float32")
    json.dump(c, open(path_out, "w"), indent=2)


def main(out):
    torch.manual_seed(0)
    print("torch", torch.__version__, "transformers", transformers.__version__)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "VERSIONS.txt"), "w") as f:
        f.write(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n")
    for name, spec in CONFIGS.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        cfg = make_config(spec)
        model = LlamaForCausalLM(cfg).float().eval()
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "norm" in pname:
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                else:
                    p.copy_(0.05 * torch.randn_like(p))
                p.copy_(p.to(torch.bfloat16).to(torch.float32))  # bf16-representable
        model.save_pretrained(os.path.join(d, "hf_f32"), safe_serialization=True)
        if name == "gqa_tied":
            model.save_pretrained(os.path.join(d, "hf_sharded"), safe_serialization=True, max_shard_size="20KB")
        if name == "llama3_rope":
            alt = os.path.join(d, "hf_altcfg")
            shutil.copytree(os.path.join(d, "hf_f32"), alt, dirs_exist_ok=True)
            other_config_form(os.path.join(alt, "config.json"), os.path.join(alt, "config.json"))
        ids = torch.randint(0, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
        out_ = model(input_ids=ids, labels=ids)
        out_.loss.backward()
        save_file({"input_ids": ids.to(torch.int32).contiguous(),
                   "logits": out_.logits.detach().float().contiguous(),
                   "loss": out_.loss.detach().reshape(1).float()}, os.path.join(d, "ref.safetensors"))
        grads = {pn: p.grad.detach().float().contiguous() for pn, p in model.named_parameters()}
        save_file(grads, os.path.join(d, "grads.safetensors"))
        # the bf16 copy last (it changes the model in place)
        model.to(torch.bfloat16).save_pretrained(os.path.join(d, "hf_bf16"), safe_serialization=True)
        print(f"{name}: loss {out_.loss.item():.6f}, {len(grads)} gradient tensors, "
              f"logits {tuple(out_.logits.shape)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
