"""A model.h .bin that `./train --init` has no shape for: rows 256 wide (so ternary exports as
TQ2_0), bf16 storage, Llama-3 RoPE scaling, an untied LM head; random weights, norms 1.
Used by tests/gguf.sh and dev/check_llamacpp.sh.

    python3 tests/make_wide_model.py OUT.bin LAYERS VOCAB CONTEXT STD_EMBED STD
"""
import os
import struct
import sys

import numpy as np

out, L, V, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
std_embed, std = float(sys.argv[5]), float(sys.argv[6])
D, F, H, KV, hd = 256, 512, 4, 2, 64
# the header (lib/model.h): magic, version, shape; dtype bf16, untied, rope theta, eps, llama3
# scaling (factor 8, low 1, high 4, original 8192), bos 1, eos 2, no quantizer, 1024 bytes
head = struct.pack("<4sI8i", b"BDLM", 1, D, F, L, H, KV, hd, V, T) + struct.pack("<2i2fi3f", 0, 1, 500000.0, 1e-5, 1, 8.0, 1.0, 4.0)
head += struct.pack("<7i", 8192, 1, 2, 6, 2, 128, 0)
head += b"\0" * (1024 - len(head))
rng = np.random.default_rng(3)
# the tensor table: embedding, attn norm, q, k, v, o, mlp norm, gate, up, down, final norm, LM head
shapes = [(V, D), (L, D), (L, H * hd, D), (L, KV * hd, D), (L, KV * hd, D), (L, D, H * hd), (L, D),
          (L, F, D), (L, F, D), (L, D, F), (D,), (V, D)]
w = [np.ones(s) if i in (1, 6, 10) else rng.normal(0, std_embed if i in (0, 11) else std, s) for i, s in enumerate(shapes)]
flat = np.concatenate([x.ravel() for x in w]).astype(np.float32)
bf16 = ((flat.view(np.uint32) + 0x7FFF + ((flat.view(np.uint32) >> 16) & 1)) >> 16).astype(np.uint16)  # nearest even
with open(out + ".tmp", "wb") as f:
    f.write(head + bf16.tobytes())
os.replace(out + ".tmp", out)
