#!/usr/bin/env python3
"""Reference token ids of the real Llama-2 SentencePiece tokenizer, for the tokenizer tests.

Runs on the GPU machine (sentencepiece installed). CORPUS is JSON lines, one string each (JSON
escapes let a case hold newlines, tabs, any Unicode). Writes one JSON object per case:
{"text": ..., "ids": [...]} with ids from encode() without BOS.
usage: python3 dev/make_tokenizer_reference.py TOKENIZER.model CORPUS.jsonl OUT.jsonl
"""
import json, sys

import sentencepiece as spm


def main(model, corpus, out):
    sp = spm.SentencePieceProcessor(model_file=model)
    n = 0
    with open(corpus, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as o:
        for line in f:
            text = json.loads(line)
            o.write(json.dumps({"text": text, "ids": sp.encode(text)}, ensure_ascii=False) + "\n")
            n += 1
    print(f"sentencepiece {spm.__version__}: vocab {sp.vocab_size()}, {n} cases")


if __name__ == "__main__":
    main(*sys.argv[1:4])
