"""llama.cpp's side of dev/check_llamacpp.sh, through llama-cpp-python's ctypes bindings to a
libllama built from source (LLAMA_CPP_LIB_PATH names its folder).

  python3 dev/check_llamacpp.py ppl MODEL.gguf FILE.ids T     perplexity as ./train --eval-ppl
  python3 dev/check_llamacpp.py greedy MODEL.gguf N TEXT       greedy continuation of TEXT
  python3 dev/check_llamacpp.py tokenize MODEL.gguf TEXTFILE   ids of the text, BOS first
  python3 dev/check_llamacpp.py sample MODEL.gguf N SEED T     N ids sampled (temperature 1)
                                                               as sequences of T from BOS
Perplexity is computed as bitdistill's eval_ppl does (and GPTQ/BitDistiller): floor(n/T)
non-overlapping windows, each run from position 0, its loss the mean cross-entropy of tokens
1..T-1, ppl = exp(mean of the window losses). llama.cpp's own llama-perplexity scores only the
second half of each window, so it is not used here.
The last line of stdout is one JSON object (sample: the ids).
"""
import json
import os
import sys

import numpy as np
from llama_cpp import Llama

# threads of llama.cpp's CPU backend (its workers spin between ops: on a busy machine, 1 is fastest
# for models this small)
THREADS = int(os.environ.get("THREADS", "1"))


def load(path, n_ctx):
    # the KV cache in F32 (llama.cpp's default is F16), so that only the weights' type differs from ./train
    return Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                 type_k=0, type_v=0, verbose=False, n_threads=THREADS, n_threads_batch=THREADS)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "ppl":
        ids = [int(x) for x in open(sys.argv[3]).read().split()]
        T = int(sys.argv[4])
        llm = load(path, T)
        losses = []
        for w in range(len(ids) // T):
            win = ids[w * T:(w + 1) * T]
            llm.reset()
            llm.eval(win)
            lp = log_softmax(np.array(llm.scores[:T], dtype=np.float64))
            losses.append(-lp[np.arange(T - 1), win[1:]].mean())
        print(json.dumps({"ppl": float(np.exp(np.mean(losses))), "windows": len(losses)}))
    elif mode == "greedy":
        n, text = int(sys.argv[3]), sys.argv[4]
        llm = load(path, 512)
        toks = llm.tokenize(text.encode(), add_bos=True)
        llm.reset()
        llm.eval(toks)
        out = []
        for _ in range(n):
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(t)
            llm.eval([t])
        print(json.dumps({"generated": llm.detokenize(out).decode("utf-8", "replace"), "ids": out}))
    elif mode == "tokenize":
        llm = load(path, 512)
        print(json.dumps(llm.tokenize(open(sys.argv[3], "rb").read(), add_bos=True)))
    elif mode == "sample":
        n, seed, T = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        rng = np.random.default_rng(seed)
        llm = load(path, T)
        out = []
        for _ in range(n // T):  # sequences of T tokens, each from BOS
            llm.reset()
            seq = [llm.token_bos()]
            llm.eval(seq)
            while len(seq) < T:
                p = np.exp(log_softmax(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)))
                seq.append(int(rng.choice(len(p), p=p / p.sum())))
                llm.eval(seq[-1:])
            out += seq
        print(" ".join(map(str, out)))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
