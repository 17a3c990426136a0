"""Helper of grammar.sh: the strings.json samples hold the escaped, non-ASCII constant and
some free non-ASCII text (so escapes and multi-byte characters went through the masks)."""
import json
import sys

free = ""
for path in sys.argv[1:]:
    docs = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert docs, path
    for d in docs:
        assert d["quote"] == 'say "hi"\\n\ttab caf\u00e9 \u4e2d\u6587 \U0001F600', (path, d["quote"])
        free += d["word"] + d["free"] + d["short"]
assert any(ord(c) > 127 for c in free), "no free non-ASCII text in any sample"
