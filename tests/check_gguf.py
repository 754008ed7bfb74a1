"""Checks a GGUF file written by `./convert --to-gguf` with the `gguf` package (llama.cpp's own
Python reader and dequantizer), against an independent dump of what the student computes:

    python3 tests/check_gguf.py OUT.gguf HF_DIR [--spm FILE | --tiktoken FILE] [--rounded]

HF_DIR is `./convert --to-hf` of the same .bin: config.json and model.safetensors holding each
linear's fake-quantized W^ (F32 or BF16). Compared:
  - every tensor, dequantized by gguf.quants.dequantize, against the safetensors tensor, with the
    rows of attn_q / attn_k permuted from Hugging Face's rotate-half order to interleaved pairs;
    a quantized type must match within the fp16 rounding of its scale (|err| <= 2^-11 |w| plus
    fp16's subnormal step; plus 2^-8 |w| when the dump is BF16), F32 and BF16 exactly; with
    --rounded (W^ rounded to nearest into the type: nf, sign, onebit, int8) within half a step
    of the block's grid;
  - the llama.* metadata against config.json, and rope_freqs against the Llama-3 formula;
  - with --spm: tokens, scores and token types against the SentencePiece protobuf, read here
    with a few lines of protobuf decoding (not the project's tokenizer.c); with --tiktoken:
    the byte-level tokens against the tiktoken file's base64 ranks in GPT-2's alphabet, and
    that every merge joins two tokens into one, in rank order.
Prints each comparison and its error; exits 1 on the first mismatch beyond tolerance.
"""
import base64
import json
import math
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

fails = 0


def check(ok, what):
    global fails
    print(("  ok    " if ok else "  FAIL  ") + what)
    fails += not ok


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = np.frombuffer(data[a:b], dtype=np.uint16 if t["dtype"] == "BF16" else np.float32)
        if t["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.reshape(t["shape"])
        out[name + ":bf16"] = t["dtype"] == "BF16"
    return out


def hf_to_interleaved(w, n_heads):
    # Meta row 2i <- HF row i, Meta row 2i+1 <- HF row i + hd/2, per head
    rows, cols = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, 2, hd // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def spm_pieces(path):
    """(piece, score, type) of every piece of a SentencePiece ModelProto (field 1)."""
    buf = open(path, "rb").read()

    def varint(p):
        v = s = 0
        while True:
            b = buf[p]
            p += 1
            v |= (b & 0x7F) << s
            s += 7
            if b < 0x80:
                return v, p

    def fields(p, end):
        while p < end:
            key, p = varint(p)
            num, wire = key >> 3, key & 7
            if wire == 0:
                v, p = varint(p)
            elif wire == 1:
                v, p = buf[p:p + 8], p + 8
            elif wire == 5:
                v, p = buf[p:p + 4], p + 4
            else:
                n, p = varint(p)
                v, p = (p, p + n), p + n
            yield num, wire, v

    out = []
    for num, wire, v in fields(0, len(buf)):
        if num != 1:
            continue
        piece, score, typ = b"", 0.0, 1
        for n2, w2, v2 in fields(*v):
            if n2 == 1:
                piece = buf[v2[0]:v2[1]]
            elif n2 == 2:
                score = struct.unpack("<f", v2)[0]
            elif n2 == 3:
                typ = v2
        out.append((piece, score, typ))
    return out


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.types) > 1 or f.types[0].name == "ARRAY":
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


def main():
    args = sys.argv[1:]
    spm = tiktoken = None
    rounded = "--rounded" in args
    if rounded:
        args.remove("--rounded")
    if "--spm" in args:
        i = args.index("--spm")
        spm = args[i + 1]
        del args[i:i + 2]
    if "--tiktoken" in args:
        i = args.index("--tiktoken")
        tiktoken = args[i + 1]
        del args[i:i + 2]
    gguf_path, hf_dir = args
    r = GGUFReader(gguf_path)
    cfg = json.load(open(hf_dir + "/config.json"))
    hf = read_safetensors(hf_dir + "/model.safetensors")
    H, KV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]

    # metadata
    want = {
        "general.architecture": "llama",
        "llama.embedding_length": cfg["hidden_size"],
        "llama.feed_forward_length": cfg["intermediate_size"],
        "llama.block_count": cfg["num_hidden_layers"],
        "llama.attention.head_count": H,
        "llama.attention.head_count_kv": KV,
        "llama.context_length": cfg["max_position_embeddings"],
        "llama.rope.dimension_count": hd,
        "llama.vocab_size": cfg["vocab_size"],
    }
    for k, v in want.items():
        got = field(r, k)
        check(got == v, f"{k} = {got} (config.json: {v})")
    for k, c in [("llama.rope.freq_base", "rope_theta"), ("llama.attention.layer_norm_rms_epsilon", "rms_norm_eps")]:
        got = field(r, k)
        check(got == np.float32(cfg[c]), f"{k} = {got} (config.json: {cfg[c]})")

    # tensors
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                 "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    worst = {}
    seen = set()
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            rs = cfg["rope_scaling"]
            base, f, lo, hi, old = cfg["rope_theta"], rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
            ref = []
            for i in range(0, hd, 2):
                wl = 2 * math.pi / (1.0 / base ** (i / hd))
                s = (old / wl - lo) / (hi - lo)
                ref.append(1.0 if wl < old / hi else f if wl > old / lo else 1 / ((1 - s) / f + s))
            err = np.abs(np.array(t.data, dtype=np.float64) - ref).max()
            check(err < 1e-5 * f, f"rope_freqs.weight against the Llama-3 formula: max |err| {err:.2e}")
            continue
        if t.name.startswith("blk."):
            _, l, kind, _ = t.name.split(".")
            hf_name = f"model.layers.{l}.{per_layer[kind]}.weight"
        else:
            kind, hf_name = t.name.split(".")[0], names[t.name]
        seen.add(hf_name)
        ref = hf[hf_name].astype(np.float32)
        got = dequantize(t.data, t.tensor_type).reshape(ref.shape)
        if kind in ("attn_q", "attn_k"):
            ref = hf_to_interleaved(ref, H if kind == "attn_q" else KV)
        err = np.abs(got.astype(np.float64) - ref)
        typ = t.tensor_type.name
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.BF16):
            tol = np.zeros_like(err)
        elif rounded and t.tensor_type == GGMLQuantizationType.F16:
            tol = np.abs(ref) * 2.0 ** -11 * 1.0001 + 2.0 ** -25
        elif rounded:  # round to nearest: half a step of the block's grid, plus the fp16 rounding of d and m
            blk = 256 if typ == "TQ2_0" else 32
            b = ref.reshape(-1, blk)
            levels = {"Q4_0": 7, "Q5_0": 15, "Q8_0": 127, "TQ2_0": 1}
            span = b.max(1) - b.min(1) if typ == "Q4_1" else np.abs(b).max(1)
            step = span / (15 if typ == "Q4_1" else levels[typ])
            tol = np.repeat(step / 2 * 1.001 + np.abs(b).max(1) * 2.0 ** -10 + 2.0 ** -24, blk).reshape(ref.shape)
        else:  # w = q * fp16(s): off by at most |q| s 2^-11 = |w| 2^-11, or |q| * 2^-25 for subnormal s;
            # a bf16 student's --to-hf dump holds W^ rounded to bf16 (up to 2^-8 relative) on top of that
            rel = 2.0 ** -11 + (2.0 ** -8 if hf[hf_name + ":bf16"] else 0.0)
            tol = np.abs(ref) * rel * 1.0001 + 16 * 2.0 ** -25
        key = (kind, typ)
        prev = worst.get(key, (0.0, True))
        worst[key] = (max(prev[0], float(err.max())), prev[1] and bool((err <= tol).all()))
    for (kind, typ), (e, ok) in worst.items():
        check(ok, f"{kind:12s} {typ:6s} against W^ of --to-hf: max |err| {e:.3e}")
    missing = sorted(k for k in set(hf) - seen if not k.endswith(":bf16"))
    check(not missing, f"every tensor of the model is in the GGUF file (missing: {missing[:3]})")

    # vocabulary
    tokens = field(r, "tokenizer.ggml.tokens")
    check(len(tokens) == cfg["vocab_size"], f"{len(tokens)} tokens (vocab_size {cfg['vocab_size']})")
    if spm:
        pieces = spm_pieces(spm)
        scores, types = field(r, "tokenizer.ggml.scores"), field(r, "tokenizer.ggml.token_type")
        bad = [i for i, (p, s, ty) in enumerate(pieces)
               if tokens[i].encode() != p or np.float32(scores[i]) != np.float32(s) or types[i] != ty]
        check(field(r, "tokenizer.ggml.model") == "llama" and not bad,
              f"{len(pieces)} SentencePiece pieces, scores and types equal the protobuf's (first mismatch: {bad[:1]})")
        check(field(r, "tokenizer.ggml.bos_token_id") == 1 and field(r, "tokenizer.ggml.eos_token_id") == 2,
              f"bos {field(r, 'tokenizer.ggml.bos_token_id')}, eos {field(r, 'tokenizer.ggml.eos_token_id')}")
    if tiktoken:
        # GPT-2's byte -> character table, built here from its definition
        printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
        chars = {b: chr(b) for b in printable}
        chars.update({b: chr(256 + k) for k, b in enumerate(b for b in range(256) if b not in chars)})
        ranks = {}
        for line in open(tiktoken, "rb").read().split(b"\n"):
            if line:
                tok, rank = line.split()
                ranks[int(rank)] = base64.b64decode(tok)
        text = lambda b: "".join(chars[x] for x in b)
        bad = [r for r, b in ranks.items() if tokens[r] != text(b)]
        check(field(r, "tokenizer.ggml.model") == "gpt2" and field(r, "tokenizer.ggml.pre") == "llama-bpe" and not bad,
              f"{len(ranks)} byte-level tokens equal the tiktoken file's in GPT-2's alphabet (first mismatch: {bad[:1]})")
        merges = field(r, "tokenizer.ggml.merges")
        index = {t: i for i, t in enumerate(tokens)}
        merged = [index.get(m.replace(" ", "", 1), -1) for m in merges]
        check(all(i >= 0 for i in merged) and merged == sorted(merged),
              f"{len(merges)} merges, each joining two tokens into a token, in the order of the merged token's rank")
        check(tokens[128000] == "<|begin_of_text|>" and field(r, "tokenizer.ggml.bos_token_id") == 128000,
              f"special tokens after the ranks, bos {field(r, 'tokenizer.ggml.bos_token_id')}")
    print(f"{fails} failed")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
