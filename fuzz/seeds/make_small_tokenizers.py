# How fuzz/seeds/tokenizer_json/*.json and tokenizer_model/small.tiktoken were made from the
# tests' Llama-3-style tokenizer (kept small so that the fuzzer runs fast on them):
#   python3 fuzz/seeds/make_small_tokenizers.py
#   head -n 300 tests/fixtures/tokenizer/bpe_tokenizer.tiktoken > fuzz/seeds/tokenizer_model/small.tiktoken
import json
j = json.load(open('tests/fixtures/tokenizer/bpe_tokenizer.json'))
m = j['model']
keep = 300  # the 256 byte tokens and the first merges
m['vocab'] = {k: v for k, v in m['vocab'].items() if v < keep}
inv = set(m['vocab'])
m['merges'] = [x for x in m['merges'] if x[0] in inv and x[1] in inv and x[0] + x[1] in inv][:60]
j['added_tokens'] = [dict(a, id=keep + i) for i, a in enumerate(j['added_tokens'][:4])]
for k in ('truncation', 'padding', 'post_processor'):
    j[k] = None
open('fuzz/seeds/tokenizer_json/small.json', 'w').write(json.dumps(j, ensure_ascii=False, separators=(',', ':')))
m['merges'] = [a + ' ' + b for a, b in m['merges']]  # the older "a b" form
open('fuzz/seeds/tokenizer_json/small_strmerges.json', 'w').write(json.dumps(j, ensure_ascii=False, separators=(',', ':')))
