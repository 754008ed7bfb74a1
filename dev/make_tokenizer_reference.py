#!/usr/bin/env python3
# Reference ids for test_tokenizer.c, from the real tokenizer libraries. Runs on the GPU
# machine (sentencepiece, tokenizers, tiktoken installed there); writes small files that are
# committed under tests/fixtures/tokenizer/.
#
#   python3 dev/make_tokenizer_reference.py --spm .carry/tok/tokenizer.model \
#           [--piqa .carry/tok/valid.jsonl] --out DIR
#
# Llama-2: the real tokenizer.model through sentencepiece.
# Llama-3: its tokenizer file is not available to us, so we build one to its published
# definition: a byte-level BPE with the Llama-3 pre-tokenizer regex and 256 special tokens,
# trained here with `tokenizers` on a little text (small, so it can be committed), saved both
# as tokenizer.json and as a tiktoken rank file; `tokenizers` and `tiktoken` give the ids.
#
# Files (all text; a string field is the hex of its UTF-8 bytes, so any byte survives):
#   llama2_ref.tsv        hex(text) \t ids \t hex(sp.decode(ids))
#   llama2_piqa.tsv       per line of PIQA valid.jsonl: count \t fnv1a64(ids)
#   bpe_tokenizer.json    the small Llama-3-style tokenizer, Hugging Face format
#   bpe_tokenizer.tiktoken   the same ranks, tiktoken format (base64 token, space, rank)
#   bpe_ref.tsv           hex(text) \t hf ids \t tiktoken ordinary ids \t tiktoken ids with
#                         specials allowed \t regex pieces (hex, comma-separated) \t hex(hf decode)
#   bpe_piqa.tsv          per PIQA line: count \t fnv1a64(hf ids) \t fnv1a64(tiktoken ids)
#   unicode_check.txt     how tokenizers' regex engine (Oniguruma) classifies \p{L} \p{N} \s,
#                         as code-point ranges, to compare with tokenizer_unicode.h
#   random_ref.tsv        RANDOM_TEXTS pseudo-random texts drawn from ALPHABET (a generator that
#                         test_tokenizer.c repeats exactly), hashed in chunks of RANDOM_CHUNK:
#                         chunk \t fnv1a64(sentencepiece ids) \t fnv1a64(hf ids) \t
#                         fnv1a64(tiktoken ordinary) \t fnv1a64(tiktoken, specials allowed)
#
# --bpe-json FILE reuses a committed tokenizer.json instead of training a new one, so the other
# fixtures can be remade without changing it.
import argparse
import base64
import json
import os
import sys

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama-3's 256 special tokens, ids n_ranks + i (meta-llama/llama3 tokenizer.py).
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
                   "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|reserved_special_token_4|>", "<|eot_id|>"] + \
                  [f"<|reserved_special_token_{i}|>" for i in range(5, 251)]
assert len(LLAMA3_SPECIALS) == 256

CORPUS = [
    b"", b"Hello world", b" Hello world", b"Hello world ", b"  two leading spaces",
    b"trailing two  ", b" ", b"   ", b"\n", b"\n\n", b"\t", b"a\tb", b"tab\t\tend\t",
    b"line one\nline two\n\nline four\r\nwindows\r\n", b"a  b   c    d     e",
    b"The quick brown fox jumps over the lazy dog. It was 3:45 p.m. on 12 March 2024.",
    b"Knowledge distillation trains a small student to match a large teacher's "
    b"distribution; quantization-aware training keeps the rounding inside the loop.",
    b'int main(void) {\n    printf("%d\\n", x[i] + 42);\n    return 0;\n}\n',
    b"def f(x):\n    if x > 0:\n        return x ** 2  # square\n    return -x\n",
    b"for (int i = 0; i < n; i++) y[i] += a*x[i];\t// saxpy",
    b"1234567890", b"3.14159", b"1,000,000", b"12345 678 9", b"2024-11-23T02:31:49Z",
    b"0x1F 0b1010 1e-5 -273.15", "½ ² ٣ 四 Ⅻ ①".encode(),
    "Café naïve résumé Ångström Straße".encode(), "e\u0301 combining acute".encode(),
    "Tiếng Việt có dấu".encode(), "日本語のテキストです。".encode(), "中文文本，标点。".encode(),
    "한국어 텍스트".encode(), "👍🏽 family 👨‍👩‍👧 🙂🙂🙂".encode(), "❤️ \u200d \ufeffBOM".encode(),
    "مرحبا بالعالم".encode(), "שלום עולם".encode(), "Привет, мир!".encode(),
    "Γειά σου Κόσμε".encode(), "Hello世界123abc".encode(),
    b"I'm, you're, they've, he'll, she'd, it's, don't", b"I'M YOU'RE THEY'VE HE'LL SHE'D IT'S",
    "'s 'S 'ſ ’s curly 'x".encode(), b"Wait...what?!", b"----", b"=====\n\n", b"a--b",
    b"(hello) [1] {x}", b"@user #tag $5 %x ^y &z *w", b" = Robert Boulter = \n",
    b" The game 's @-@ 1 @,@ 000 ", b"<s>hello</s>", b"<unk>",
    b"<|begin_of_text|>Hi<|end_of_text|>", b"<|eot_id|>x<|reserved_special_token_5|>y",
    b"<0x41> literal", "▁ literal lower one eighth block ▁▁".encode(),
    "\u00a0nbsp\u00a0 \u3000ideographic\u2028sep \u0085nel".encode(), b"\x0b\x0c vt ff",
    b"a\x00b", b"\x01\x1f\x7f controls", b"\r", b"\r\r\n", b" \n ", b"a \n b", b"x  \n\n  y",
    b"end\n   ", b"  \t \n\t x", "𠀀 ꙮ rare".encode(), b"word " * 60, b"a" * 300,
    b" " * 40, b"\n" * 20, b"1" * 40, b"ab" * 50,
    # invalid UTF-8 (bytes that no Python str can hold)
    b"\xff", b"abc\xffdef", b"\xc3(", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80 surrogate",
    b"\xc0\xaf overlong", b"\xf4\x90\x80\x80 too big", b"\x80\x80", "ok é \xe9".encode() + b"\xe9 bad",
]


def fnv1a64(ids, h=14695981039346656037):
    for i in ids:
        h = ((h ^ i) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


# Random texts: symbols (strings, some repeated to weigh them) drawn by xorshift64*, so that C
# can repeat the draw. They stress the pre-tokenizer's whitespace, contraction and digit rules.
ALPHABET = [" "] * 6 + ["\n"] * 2 + ["\r", "\t", "\r\n", "a", "b", "e", "s", "t", "I", "S", "'",
    "'s", "'RE", "'ll", " the", "0", "1", "9", ".", ",", "!", "-", "(", '"', "é", "ß", "ſ", "日", "本",
    "の", "한", "Ж", "λ", "½", "²", "٣", "\u00a0", "\u3000", "\u2028", "\u0085", "\u000b", "\u200b",
    "\u200d", "\u0301", "\U0001F600", "\U0001F3FD", "▁", "<", "|", ">", "\ufeff", "\u0000",
    "<|begin_of_text|>", "<|eot_id|>", "<s>", "ab", "aaa", "\U00020000"]
RANDOM_TEXTS, RANDOM_CHUNK, MASK = 4000, 50, 0xFFFFFFFFFFFFFFFF


def random_texts():
    for i in range(RANDOM_TEXTS):
        x = (0x9E3779B97F4A7C15 * (i + 1)) & MASK

        def nxt():
            nonlocal x
            x ^= x >> 12
            x = (x ^ (x << 25)) & MASK
            x ^= x >> 27
            return (x * 0x2545F4914F6CDD1D) & MASK
        n = 1 + nxt() % 40
        yield "".join(ALPHABET[nxt() % len(ALPHABET)] for _ in range(n))


def random_step(args, sp_path, tok, enc):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=sp_path)
    lines = ["# alphabet\t" + ",".join(a.encode("utf-8").hex() for a in ALPHABET),
             f"# {RANDOM_TEXTS} texts in chunks of {RANDOM_CHUNK}: chunk\tsentencepiece\thf\ttiktoken ordinary\ttiktoken all specials"]
    h = [14695981039346656037] * 4
    for i, text in enumerate(random_texts()):
        h[0] = fnv1a64(sp.encode(text.encode("utf-8"), out_type=int), h[0])
        h[1] = fnv1a64(tok.encode(text, add_special_tokens=False).ids, h[1])
        h[2] = fnv1a64(enc.encode_ordinary(text), h[2])
        h[3] = fnv1a64(enc.encode(text, allowed_special="all"), h[3])
        if (i + 1) % RANDOM_CHUNK == 0:
            lines.append(f"{i // RANDOM_CHUNK}\t" + "\t".join(f"{v:016x}" for v in h))
            h = [14695981039346656037] * 4
    write(os.path.join(args.out, "random_ref.tsv"), lines)


def speeds(sp_path, tok, enc, piqa):
    import time
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=sp_path)
    text = b"\n".join(piqa).decode("utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    for name, fn in [("sentencepiece", lambda: sp.encode(text)), ("tokenizers", lambda: tok.encode(text)),
                     ("tiktoken", lambda: enc.encode_ordinary(text))]:
        t0 = time.perf_counter()
        fn()
        print(f"speed: {name} encodes PIQA ({mb:.2f} MB, one string) at {mb / (time.perf_counter() - t0):.2f} MB/s")


def hx(b):
    return b.hex() if b else "-"


def ids_str(ids):
    return " ".join(map(str, ids)) if ids else "-"


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path} ({len(lines)} lines)")


def piqa_lines(path):
    if not path or not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return [l.rstrip(b"\n") for l in f]


def llama2(args, piqa):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=args.spm)
    print("sentencepiece", spm.__version__, "pieces", sp.get_piece_size(), "bos", sp.bos_id(),
          "eos", sp.eos_id(), "unk", sp.unk_id(), "pad", sp.pad_id())
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
        m = pb.ModelProto()
        m.ParseFromString(open(args.spm, "rb").read())
        ts, ns = m.trainer_spec, m.normalizer_spec
        print("trainer_spec: model_type", ts.model_type, "byte_fallback", ts.byte_fallback,
              "treat_ws_suffix", ts.treat_whitespace_as_suffix, "unk/bos/eos/pad", ts.unk_id,
              ts.bos_id, ts.eos_id, ts.pad_id)
        print("normalizer_spec: name", ns.name, "add_dummy_prefix", ns.add_dummy_prefix,
              "remove_extra_ws", ns.remove_extra_whitespaces, "escape_ws", ns.escape_whitespaces,
              "charsmap bytes", len(ns.precompiled_charsmap))
    except Exception as e:
        print("model proto dump failed:", e)
    lines = ["# hex(text)\tsentencepiece ids (no BOS)\thex(sentencepiece decode of the ids)"]
    for text in CORPUS:
        try:
            ids = sp.encode(text, out_type=int)
        except Exception as e:  # bytes not accepted: say so, fall back to replacement
            print("encode(bytes) failed:", e, text[:20])
            ids = sp.encode(text.decode("utf-8", "replace"), out_type=int)
        dec = sp.decode(ids).encode("utf-8", "surrogatepass")
        lines.append(f"{hx(text)}\t{ids_str(ids)}\t{hx(dec)}")
        if len(text) < 40:
            print(repr(text), ids[:20], [sp.id_to_piece(i) for i in ids[:12]])
    write(os.path.join(args.out, "llama2_ref.tsv"), lines)
    if piqa:
        out = ["# per line of PIQA valid.jsonl (raw bytes, newline removed): count\tfnv1a64 of sentencepiece ids"]
        for l in piqa:
            ids = sp.encode(l, out_type=int)
            out.append(f"{len(ids)}\t{fnv1a64(ids):016x}")
        write(os.path.join(args.out, "llama2_piqa.tsv"), out)


def bytes_to_unicode():
    # GPT-2's byte -> printable character table (the tokenizer.json vocabulary alphabet)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def onig_classes(out_dir):
    from tokenizers import Regex, pre_tokenizers
    chars = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    index = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    lines = []
    for name, pat in [("L", r"\p{L}"), ("N", r"\p{N}"), ("s", r"\s")]:
        # Split with behavior 'removed' drops every match: what is not kept is the class.
        kept = pre_tokenizers.Split(Regex(pat), behavior="removed").pre_tokenize_str(chars)
        keep = bytearray(len(chars))
        if kept and max(b for _, (a, b) in kept) > len(chars):  # offsets in bytes, not chars
            starts, pos = {}, 0
            for i, ch in enumerate(chars):
                starts[pos] = i
                pos += len(ch.encode("utf-8"))
            starts[pos] = len(chars)
            kept = [(p, (starts[a], starts[b])) for p, (a, b) in kept]
        for _, (a, b) in kept:
            keep[a:b] = b"\x01" * (b - a)
        cps = [index[i] for i in range(len(chars)) if not keep[i]]
        rs, start, prev = [], None, None
        for c in cps:
            if start is None:
                start = c
            elif c != prev + 1:
                rs.append((start, prev)); start = c
            prev = c
        if start is not None:
            rs.append((start, prev))
        lines.append(f"{name} {len(rs)} " + " ".join(f"{a:x}-{b:x}" for a, b in rs))
        print(f"onig \\{name}: {len(cps)} code points in {len(rs)} ranges")
    write(os.path.join(out_dir, "unicode_check.txt"), lines)


def llama3_style(args, piqa):
    import tokenizers
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    import tiktoken
    print("tokenizers", tokenizers.__version__, "tiktoken", tiktoken.__version__)
    try:
        model = models.BPE(ignore_merges=True)
    except TypeError:
        print("BPE(ignore_merges=...) not supported; plain BPE")
        model = models.BPE()
    if args.bpe_json:
        return finish_bpe(args, piqa, Tokenizer.from_file(args.bpe_json), None)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    texts = [l.decode("utf-8", "replace") for l in piqa]
    for root, _, files in os.walk("."):
        if root.startswith("./.") or "fixtures" in root:
            continue
        for fn in files:
            if fn.endswith((".c", ".h", ".md", ".sh", ".py")):
                texts.append(open(os.path.join(root, fn), encoding="utf-8", errors="replace").read())
    texts += [t.decode("utf-8", "replace") for t in CORPUS]
    trainer = trainers.BpeTrainer(vocab_size=args.bpe_vocab, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer)
    n_ranks = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in LLAMA3_SPECIALS])
    jpath = os.path.join(args.out, "bpe_tokenizer.json")
    tok.save(jpath)
    print("trained", n_ranks, "ranks; json bytes", os.path.getsize(jpath))
    return finish_bpe(args, piqa, tok, jpath)


def finish_bpe(args, piqa, tok, jpath):
    import tiktoken
    from tokenizers import Regex, pre_tokenizers
    jpath = jpath or args.bpe_json
    n_ranks = tok.get_vocab_size(with_added_tokens=False)
    # the same ranks as a tiktoken file
    b2u = bytes_to_unicode()
    u2b = {v: k for k, v in b2u.items()}
    vocab = json.load(open(jpath))["model"]["vocab"]
    ranks = {bytes(u2b[ch] for ch in s): i for s, i in vocab.items()}
    assert len(ranks) == n_ranks and sorted(ranks.values()) == list(range(n_ranks))
    tpath = os.path.join(args.out, "bpe_tokenizer.tiktoken")
    with open(tpath, "w") as f:
        for b, r in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(b).decode() + f" {r}\n")
    enc = tiktoken.Encoding(name="llama3_style_test", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                            special_tokens={s: n_ranks + i for i, s in enumerate(LLAMA3_SPECIALS)})
    split = pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated")
    import regex
    lines = ["# hex(text)\thf ids\ttiktoken ordinary ids\ttiktoken ids, specials allowed\t"
             "regex pieces (hex, comma-separated)\thex(hf decode)"]
    disagree = 0
    for text in CORPUS:
        try:
            s = text.decode("utf-8")
        except UnicodeDecodeError:
            continue  # no Python str holds it: the C test checks the round trip only
        hf = tok.encode(s, add_special_tokens=False).ids
        tk = enc.encode_ordinary(s)
        tks = enc.encode(s, allowed_special="all")
        pieces = [p for p, _ in split.pre_tokenize_str(s)]
        if pieces != regex.findall(LLAMA3_PATTERN, s):
            disagree += 1
            print("onig and python-regex split differently:", repr(s[:40]))
        dec = tok.decode(hf, skip_special_tokens=False).encode("utf-8", "surrogatepass")
        lines.append("\t".join([hx(text), ids_str(hf), ids_str(tk), ids_str(tks),
                                ",".join(hx(p.encode("utf-8", "surrogatepass")) for p in pieces) or "-", hx(dec)]))
        if hf != tks:
            print("hf and tiktoken(all specials) differ on", repr(s[:40]), hf[:10], tks[:10])
    print("split disagreements onig vs regex:", disagree)
    write(os.path.join(args.out, "bpe_ref.tsv"), lines)
    if piqa:
        out = ["# per line of PIQA valid.jsonl (UTF-8): count\tfnv1a64(hf ids)\tfnv1a64(tiktoken ordinary ids)"]
        diff = 0
        for l in piqa:
            s = l.decode("utf-8")
            hf = tok.encode(s, add_special_tokens=False).ids
            tk = enc.encode_ordinary(s)
            diff += hf != tk
            out.append(f"{len(hf)}\t{fnv1a64(hf):016x}\t{fnv1a64(tk):016x}")
        print("piqa lines where hf and tiktoken differ:", diff)
        write(os.path.join(args.out, "bpe_piqa.tsv"), out)
    random_step(args, args.spm, tok, enc)
    if piqa:
        speeds(args.spm, tok, enc, piqa)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spm", required=True)
    ap.add_argument("--piqa", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bpe-vocab", type=int, default=2000)
    ap.add_argument("--bpe-json", default="", help="reuse this tokenizer.json instead of training one")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    piqa = piqa_lines(args.piqa)
    print("piqa lines:", len(piqa))
    steps = [("llama2", lambda: llama2(args, piqa)), ("llama3-style", lambda: llama3_style(args, piqa)),
             ("unicode", lambda: onig_classes(args.out))]
    failed = 0
    for name, fn in steps:  # each step on its own, so one failure still leaves the others' files
        try:
            fn()
        except Exception:
            import traceback
            traceback.print_exc()
            failed += 1
            print(f"step {name} FAILED")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
