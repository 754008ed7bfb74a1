#!/usr/bin/env python3
"""Reference numbers for eval.c, computed the way lm-evaluation-harness v0.4 computes them.

lm-eval cannot be installed on the GPU machine (no network), so this script re-implements, from
the harness's source, the parts that decide the numbers:

  task YAMLs     piqa:       "Question: {goal}\\nAnswer:"  ->  " " + sol1 / sol2,  gold = label
                 hellaswag:  utils.process_docs: query = preprocess(activity_label + ": " +
                             ctx_a + " " + ctx_b.capitalize()), choices = preprocess(ending),
                             preprocess = strip, " [title]" -> ". ", re.sub(r"\\[.*?\\]", ""),
                             "  " -> " " (one pass)
                 winogrande: multiple_inputs; contexts = sentence[:i] + option (i = index of "_"),
                             continuation = " " + sentence[i+1:].strip(), gold = answer - 1; acc only
                 arc_*:      "Question: {question}\\nAnswer:" -> " " + choice text,
                             gold = labels.index(answerKey)
  TemplateLM.loglikelihood / _encode_pair
                 trailing whitespace of the context moves to the front of the continuation;
                 whole = enc(context + continuation), ctx = enc(context),
                 continuation tokens = whole[len(ctx):]
  HFLM._loglikelihood_tokens
                 input = (ctx + cont)[-(max_length + 1):][:-1]; score = sum of log_softmax at the
                 continuation's positions
  ConfigurableTask.process_results
                 acc = argmax(ll) == gold, acc_norm = argmax(ll / len(choice)) == gold (len in
                 Python characters, np.argmax: first maximum wins); stderr = sample std / sqrt(n)

BOS: enc() above is tokenizer.encode(text, add_special_tokens=X). Harness releases before PR
#3347 (Oct 2025) pass X = add_bos_token = False; later ones pass nothing, so the tokenizer's own
default applies, which for Llama-2 and Llama-3 adds BOS. Both are computed here ("bos" and
"nobos"); the ids stored are those without BOS (with BOS they are [BOS] + the same ids, which
the script checks).

WikiText-2: GPTQ / BitDistiller's "\\n\\n".join(load_dataset('wikitext', 'wikitext-2-raw-v1',
split='test')['text']); the Hugging Face loader yields each line of wiki.test.raw with its '\\n'
when it has non-whitespace, else "" (see eval.c). The joined text and its ids (with BOS) are stored.

The model: a small random LlamaForCausalLM with the real Llama-2 vocabulary (32,000), tied
embeddings, every weight rounded to bf16 and saved in bf16 (save_pretrained, imported by
./convert); log-likelihoods are computed from the same numbers in fp32 on the CPU, eager
attention. max_position_embeddings is small (128) so that the long HellaSwag fixture item is
left-truncated as the harness truncates.

Token ids: the harness tokenizes with the Hugging Face tokenizer; the script tries to rebuild it
from tokenizer.model and uses it when it agrees with sentencepiece on a probe text, else
sentencepiece's ids (the committed reference: transformers 5.17's LlamaTokenizer built from the
.model file returned no ids at all, so the ids are sentencepiece 0.2.2's, which the hub's
tokenizer.json reproduces on plain text).

usage (GPU machine, repo root):
  python3 dev/make_eval_reference.py --spm .carry/eval/tokenizer.model \\
      --fixtures tests/fixtures/eval --piqa-real .carry/eval/piqa --out $OUT
  python3 dev/make_eval_reference.py --dry --fixtures tests/fixtures/eval   (no torch: prints the
      harness-formatted requests, for checking the text rules anywhere)
Writes OUT/hf_model/ (config.json, model.safetensors), OUT/reference.json, OUT/VERSIONS.txt.
"""
import argparse, json, math, os, platform, re, sys

MAX_POS = 128
SEED = 1234


# ---------------------------------------------------------------------------------------------
# Task documents -> requests, as the harness's task configs build them

def read_jsonl(path):
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                docs.append(json.loads(line))
    return docs


def read_labels(path):
    with open(path, encoding="utf-8") as f:
        return [int(x) for x in f.read().split()]


def hellaswag_preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


# Each item: {"requests": [(context, continuation)], "choices": [str], "gold": int}
def piqa_items(folder, limit=None):
    docs = read_jsonl(os.path.join(folder, "valid.jsonl"))
    labels = read_labels(os.path.join(folder, "valid-labels.lst"))
    items = []
    for d, lab in list(zip(docs, labels))[:limit]:
        ctx = "Question: " + d["goal"] + "\nAnswer:"
        choices = [d["sol1"], d["sol2"]]
        items.append({"requests": [(ctx, " " + c) for c in choices], "choices": choices, "gold": lab})
    return items


def hellaswag_items(folder):
    items = []
    for d in read_jsonl(os.path.join(folder, "hellaswag_val.jsonl")):
        ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
        query = hellaswag_preprocess(d["activity_label"] + ": " + ctx)
        choices = [hellaswag_preprocess(e) for e in d["endings"]]
        items.append({"requests": [(query, " " + c) for c in choices], "choices": choices,
                      "gold": int(d["label"])})
    return items


def winogrande_items(folder):
    docs = read_jsonl(os.path.join(folder, "dev.jsonl"))
    labels = read_labels(os.path.join(folder, "dev-labels.lst"))
    items = []
    for d, lab in zip(docs, labels):
        i = d["sentence"].index("_")
        target = d["sentence"][i + 1:].strip()
        contexts = [d["sentence"][:i] + opt for opt in (d["option1"], d["option2"])]
        items.append({"requests": [(c, " " + target) for c in contexts], "choices": contexts,
                      "gold": {"1": 0, "2": 1}[str(lab)]})
    return items


def arc_items(path):
    items = []
    for d in read_jsonl(path):
        q = d["question"]
        texts = [c["text"] for c in q["choices"]]
        labels = [c["label"] for c in q["choices"]]
        ctx = "Question: " + q["stem"] + "\nAnswer:"
        items.append({"requests": [(ctx, " " + t) for t in texts], "choices": texts,
                      "gold": labels.index(d["answerKey"])})
    return items


def fixture_tasks(fx):
    return {
        "piqa": (piqa_items(os.path.join(fx, "piqa")), True),
        "hellaswag": (hellaswag_items(os.path.join(fx, "hellaswag")), True),
        "winogrande": (winogrande_items(os.path.join(fx, "winogrande")), False),
        "arc_easy": (arc_items(os.path.join(fx, "ARC-Easy", "ARC-Easy-Test.jsonl")), True),
        "arc_challenge": (arc_items(os.path.join(fx, "ARC-Challenge", "ARC-Challenge-Test.jsonl")), True),
    }


def wikitext_join(path):
    # datasets' wikitext loader: open(path, encoding="utf-8") iterates lines (universal newlines)
    with open(path, encoding="utf-8") as f:
        lines = [row if row.strip() else "" for row in f]
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The harness's tokenization and scoring

def encode_pair(enc, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = enc(context + continuation)
    ctx = enc(context)
    return ctx, whole[len(ctx):]


def mean_stderr(xs):
    n = len(xs)
    mu = sum(xs) / n
    if n < 2:
        return mu, None
    var = sum((x - mu) ** 2 for x in xs) / (n - 1)
    return mu, math.sqrt(var) / math.sqrt(n)


def argmax(xs):  # np.argmax: the first maximum
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def build_model(torch, transformers):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(SEED)
    kw = dict(vocab_size=32000, hidden_size=8, intermediate_size=24, num_hidden_layers=2,
              num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_POS,
              rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    cfg = LlamaConfig(**kw)  # rope_theta: the default, 10000
    try:
        model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager")
    except Exception as e:
        print("eager attention not selectable, using the default:", repr(e))
        model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_tokens" in name:
                p.normal_(0.0, 1.0)        # spread logits: a tiny tied model is otherwise flat
            elif p.dim() == 1:
                p.uniform_(0.5, 1.5)       # RMSNorm gains
            else:
                p.normal_(0.0, 0.5)
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    model.eval()
    return model


def score_requests(torch, model, reqs):
    """reqs: list of (ctx_ids, cont_ids) -> list of (summed log-likelihood, inputs length)."""
    out = []
    for ctx, cont in reqs:
        assert 0 < len(cont) <= MAX_POS, f"continuation of {len(cont)} tokens (context {len(ctx)})"
        inp = (ctx + cont)[-(MAX_POS + 1):][:-1]
        with torch.no_grad():
            logits = model(torch.tensor([inp])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        n = len(inp)
        ll = sum(float(logp[n - len(cont) + j, cont[j]]) for j in range(len(cont)))
        out.append((ll, n))
    return out


def make_tokenizers(spm_path):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    hf, why = None, ""
    try:
        import transformers
        for cls in ("LlamaTokenizerFast", "LlamaTokenizer"):
            try:
                hf = getattr(transformers, cls)(vocab_file=spm_path, legacy=False)
                break
            except Exception as e:  # try the next class
                why += f"{cls}: {e!r}; "
    except Exception as e:
        why += repr(e)
    if hf is not None:  # a tokenizer rebuilt from tokenizer.model must agree on plain text
        probe = "Question: How do I dry wet sneakers?\nAnswer: Stuff them with newspaper."
        got, want = hf.encode(probe, add_special_tokens=False), sp.encode(probe)
        print("HF tokenizer", type(hf).__name__, "probe ids", got, "sentencepiece", want)
        if got != want:
            why += f"{type(hf).__name__} gives {got} where sentencepiece gives {want} on {probe!r}"
            hf = None
    return sp, hf, why


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--spm")
    ap.add_argument("--piqa-real")
    ap.add_argument("--out")
    ap.add_argument("--dry", action="store_true")
    a = ap.parse_args()

    tasks = fixture_tasks(a.fixtures)
    wiki_text = wikitext_join(os.path.join(a.fixtures, "wikitext-2-raw", "wiki.test.raw"))
    if a.dry:
        for name, (items, _) in tasks.items():
            for it in items:
                for c, k in it["requests"]:
                    print(name, json.dumps(c), json.dumps(k))
        print("wikitext", json.dumps(wiki_text))
        return

    import torch, transformers
    torch.set_num_threads(8)
    sp, hf, why = make_tokenizers(a.spm)
    notes = []
    if hf is None:
        notes.append("Hugging Face tokenizer unavailable (" + why + "); ids are sentencepiece's")
    bos = 1
    mismatch = [0, 0]

    def enc(text):  # without BOS, as add_special_tokens=False
        ids_sp = sp.encode(text)
        if hf is None:
            return ids_sp
        ids = hf.encode(text, add_special_tokens=False)
        if hf.encode(text) != [bos] + ids:
            notes.append("the HF tokenizer's default encode is not [BOS] + ids for " + json.dumps(text))
        mismatch[0] += 1
        if ids != ids_sp:
            mismatch[1] += 1
            notes.append("tokenizers differ on " + json.dumps(text))
        return ids

    def enc_bos(text):
        return [bos] + enc(text)

    model = build_model(torch, transformers)
    ref = {"max_position_embeddings": MAX_POS, "bos_id": bos, "tasks": {}}

    def run_items(items, has_norm, keep_text):
        out_items = []
        lls = {"bos": [], "nobos": []}
        for it in items:
            rec = {"gold": it["gold"], "norm_len": [len(c) for c in it["choices"]], "requests": []}
            for mode, e in (("nobos", enc), ("bos", enc_bos)):
                pairs = [encode_pair(e, c, k) for c, k in it["requests"]]
                scores = score_requests(torch, model, pairs)
                ll = [s for s, _ in scores]
                rec["ll_" + mode] = ll
                rec["acc_" + mode] = int(argmax(ll) == it["gold"])
                rec["acc_norm_" + mode] = int(argmax([x / n for x, n in zip(ll, rec["norm_len"])]) == it["gold"])
                if mode == "nobos":
                    for (c, k), (ci, ki) in zip(it["requests"], pairs):
                        r = {"n_ctx": len(ci), "n_cont": len(ki)}
                        if keep_text:
                            r.update(context=c, continuation=k, ids=ci + ki)
                        rec["requests"].append(r)
                else:  # with BOS the split must be the same one shifted by one
                    for r, (ci, ki) in zip(rec["requests"], pairs):
                        assert len(ci) == r["n_ctx"] + 1 and len(ki) == r["n_cont"]
            out_items.append(rec)
        metrics = {}
        for mode in ("bos", "nobos"):
            acc = [r["acc_" + mode] for r in out_items]
            m, s = mean_stderr(acc)
            metrics[mode] = {"acc": m, "acc_stderr": s, "n": len(acc)}
            if has_norm:
                m, s = mean_stderr([r["acc_norm_" + mode] for r in out_items])
                metrics[mode].update(acc_norm=m, acc_norm_stderr=s)
        return out_items, metrics

    import traceback
    for name, (items, has_norm) in tasks.items():
        try:  # one task failing must not lose the others (there is one run)
            its, met = run_items(items, has_norm, True)
            ref["tasks"][name] = {"items": its, "metrics": met, "has_norm": has_norm}
            print(name, json.dumps(met))
        except Exception:
            traceback.print_exc()
            notes.append("task " + name + " failed")
    if a.piqa_real:
        try:
            its, met = run_items(piqa_items(a.piqa_real, 20), True, False)
            ref["piqa_real"] = {"items": its, "metrics": met}
            print("piqa_real", json.dumps(met))
        except Exception:
            traceback.print_exc()
            notes.append("piqa_real failed")
    ref["wikitext2"] = {"joined": wiki_text, "ids_bos": enc_bos(wiki_text)}

    # every log-likelihood margin that decides an argmax, so a test knows how close a call was
    margins = []
    for t in list(ref["tasks"].values()) + ([ref["piqa_real"]] if "piqa_real" in ref else []):
        for r in t["items"]:
            for mode in ("bos", "nobos"):
                ll = sorted(r["ll_" + mode], reverse=True)
                margins.append(ll[0] - ll[1])
                nl = sorted([x / n for x, n in zip(r["ll_" + mode], r["norm_len"])], reverse=True)
                margins.append(nl[0] - nl[1])
    ref["min_margin"] = min(margins) if margins else None
    ref["notes"] = notes
    ref["hf_vs_sentencepiece"] = {"texts": mismatch[0], "different": mismatch[1]}
    print("notes", notes)
    print("min argmax margin", ref["min_margin"], "| tokenizer texts", mismatch[0], "differing", mismatch[1])

    os.makedirs(a.out, exist_ok=True)
    mdir = os.path.join(a.out, "hf_model")
    x = torch.tensor([list(range(5, 40))])
    with torch.no_grad():
        want = model(x).logits  # before the bf16 cast, which also rounds RoPE's inv_freq buffer
    model.to(torch.bfloat16).save_pretrained(mdir)
    for f in os.listdir(mdir):  # keep only what ./convert reads
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(mdir, f))
    # the saved bf16 folder must reproduce the reference numbers exactly
    try:
        back = transformers.LlamaForCausalLM.from_pretrained(mdir, attn_implementation="eager", dtype=torch.float32)
    except TypeError:
        back = transformers.LlamaForCausalLM.from_pretrained(mdir, attn_implementation="eager", torch_dtype=torch.float32)
    with torch.no_grad():
        d = (back.eval()(x).logits - want).abs().max().item()
    print("reloaded bf16 folder vs the reference model: max |logit difference|", d)
    notes.append(f"reloaded bf16 folder reproduces the logits to {d}")
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(a.out, "VERSIONS.txt"), "w") as f:
        f.write(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n")
        import sentencepiece, tokenizers
        f.write(f"sentencepiece {sentencepiece.__version__}\ntokenizers {tokenizers.__version__}\n")
        f.write(f"python {platform.python_version()}\n")
        f.write("tokenizer: " + (type(hf).__name__ if hf is not None else "sentencepiece") + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
