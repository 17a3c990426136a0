#!/usr/bin/env bash
# Hub model names (--model ORG/NAME[@REV][:QUANT]) against a local stand-in for the Hub
# (tests/hub/server.py, no network): a cache laid out as huggingface_hub writes it is used
# offline (HF_HUB_CACHE, HF_HOME); a repository made from the bundled model downloads into an
# empty cache in that layout (only the files a model needs) and generates what the original
# does; a download cut mid-file resumes with a Range request (the bytes it had are not fetched
# again); a wrong checksum is refused and its partial blob removed; a gated repository answers
# 401 and the error names HF_TOKEN; :Q8_0 picks that GGUF of a GGUF repository; 404s, an
# unreachable endpoint and an unmatched suffix give clear errors; paths still win over names.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MT="$PWD/$BUILD/memtune"
A=${MEMTUNE_ASSETS:-../shared/assets}
M="$A/models/stories260K/stories260K.bin"
[ -f "$M" ] || { echo "no stories260K in $A"; exit 77; }
command -v python3 >/dev/null || { echo "python3 is needed for the stand-in Hub"; exit 77; }
TMP="$PWD/$BUILD/tmp/cli_hub"; rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
unset HF_HUB_CACHE HF_HOME HF_TOKEN HF_HUB_OFFLINE HF_ENDPOINT MEMTUNE_MODEL
export OMP_WAIT_POLICY=PASSIVE
gen() { "$MT" generate --prompt "Once upon a time" --temperature 0 -n 24 -q --threads 1 "$@"; }

# the repositories: the bundled model as an HF directory and as GGUF files
R="$TMP/repos"
"$MT" convert --model "$M" --out "$TMP/hf" --format hf 2>/dev/null
"$MT" convert --model "$M" --out "$TMP/tiny.Q8_0.gguf" --format gguf --type q8_0 2>/dev/null
"$MT" convert --model "$M" --out "$TMP/tiny.F32.gguf" --format gguf 2>/dev/null
[ -f "$TMP/hf/model.safetensors" ] && [ -f "$TMP/tiny.Q8_0.gguf" ] || { echo "FAIL convert"; exit 1; }
for r in tiny resume corrupt gated; do
  mkdir -p "$R/test-org/$r"; cp "$TMP/hf"/* "$R/test-org/$r/"
  echo "# a model card" > "$R/test-org/$r/README.md"; head -c 5000 /dev/urandom > "$R/test-org/$r/training_args.bin"
done
mkdir -p "$R/test-org/tiny-GGUF"; cp "$TMP/tiny.Q8_0.gguf" "$TMP/tiny.F32.gguf" "$R/test-org/tiny-GGUF/"
SIZE=$(stat -c %s "$TMP/hf/model.safetensors"); CUT=$((SIZE / 2))

LOG="$TMP/server.log"; : > "$LOG"
python3 tests/hub/server.py --root "$R" --port-file "$TMP/port" --log "$LOG" --gated test-org/gated \
  --corrupt test-org/corrupt/model.safetensors --cut "test-org/resume/model.safetensors:$CUT" \
  --renamed test-org/old-name=test-org/tiny 2> "$TMP/server.err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
[ -s "$TMP/port" ] || { echo "FAIL the stand-in Hub did not start"; cat "$TMP/server.err"; exit 1; }
EP="http://127.0.0.1:$(cat "$TMP/port")"
DEAD="http://127.0.0.1:9"   # nothing listens there: any download attempt fails

gen --model "$M" > "$TMP/ref.txt" 2>/dev/null
gen --model "$TMP/tiny.Q8_0.gguf" > "$TMP/ref_q8.txt" 2>/dev/null
[ -s "$TMP/ref.txt" ] || { echo "FAIL reference generation"; exit 1; }

# 1. a cache that huggingface_hub wrote (built here in its layout), offline
python3 - "$TMP/hf" "$TMP/prebuilt" <<'EOF'
import hashlib, os, sys
src, cache = sys.argv[1:3]
repo = os.path.join(cache, "models--someone--stories")
commit = "0123456789abcdef0123456789abcdef01234567"
os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
open(os.path.join(repo, "refs", "main"), "w").write(commit)
snap = os.path.join(repo, "snapshots", commit)
os.makedirs(snap, exist_ok=True)
os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
for f in os.listdir(src):
    data = open(os.path.join(src, f), "rb").read()
    h = hashlib.sha256(data).hexdigest()
    open(os.path.join(repo, "blobs", h), "wb").write(data)
    os.symlink(os.path.join("..", "..", "blobs", h), os.path.join(snap, f))
EOF
HF_HUB_CACHE="$TMP/prebuilt" HF_ENDPOINT=$DEAD gen --model someone/stories > "$TMP/g1.txt" 2> "$TMP/g1.err"
check "a model in a prebuilt HF_HUB_CACHE generates offline, as the original" "cmp -s $TMP/g1.txt $TMP/ref.txt"
mkdir -p "$TMP/home"; ln -s "$TMP/prebuilt" "$TMP/home/hub"
HF_HOME="$TMP/home" HF_HUB_OFFLINE=1 gen --model someone/stories@main > "$TMP/g2.txt" 2> "$TMP/g2.err"
check "HF_HOME/hub is the cache when HF_HUB_CACHE is unset (@main, HF_HUB_OFFLINE=1)" "cmp -s $TMP/g2.txt $TMP/ref.txt"
HF_HUB_CACHE="$TMP/prebuilt" HF_ENDPOINT=$DEAD gen --model someone/stories@0123456789abcdef0123456789abcdef01234567 > "$TMP/g3.txt" 2>/dev/null
check "@COMMIT names the snapshot" "cmp -s $TMP/g3.txt $TMP/ref.txt"
HF_HUB_CACHE="$TMP/prebuilt" HF_HUB_OFFLINE=1 gen --model someone/other > /dev/null 2> "$TMP/g4.err"; rc=$?
check "offline, a name not in the cache is refused saying so" "[ $rc -ne 0 ] && grep -q 'not in the cache' $TMP/g4.err"

# 2. download into an empty cache, then generate
C="$TMP/cache"
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" MEMTUNE_PROGRESS=1 gen --model test-org/tiny > "$TMP/d1.txt" 2> "$TMP/d1.err"
check "a download into an empty cache generates as the original" "cmp -s $TMP/d1.txt $TMP/ref.txt"
check "a progress line is drawn on stderr" "grep -q 'downloading model.safetensors: .*100%' $TMP/d1.err"
RD="$C/models--test-org--tiny"
COMMIT=$(cat "$RD/refs/main" 2>/dev/null)
SHA=$(sha256sum "$TMP/hf/model.safetensors" | cut -d' ' -f1)
check "refs/main holds the commit the Hub named" "[ \"$COMMIT\" = \"\$(python3 -c 'import hashlib; print(hashlib.sha1(b\"test-org/tiny\").hexdigest())')\" ]"
check "snapshots/<commit>/model.safetensors -> ../../blobs/<sha256>" "[ \"\$(readlink $RD/snapshots/$COMMIT/model.safetensors)\" = ../../blobs/$SHA ] && cmp -s $RD/blobs/$SHA $TMP/hf/model.safetensors"
check "config and tokenizer are there too" "[ -f $RD/snapshots/$COMMIT/config.json ] && [ -f $RD/snapshots/$COMMIT/tokenizer.json ]"
check "only the files a model needs were fetched (no README, no training_args.bin)" "! grep -q 'README.md\|training_args' $LOG && ! [ -e $RD/snapshots/$COMMIT/README.md ]"
check "no partial file is left" "[ -z \"\$(find $C -name '*.incomplete')\" ]"
if python3 -c "import huggingface_hub" 2>/dev/null; then
  python3 -c "
from huggingface_hub import scan_cache_dir
info = scan_cache_dir('$C')
assert any(r.repo_id == 'test-org/tiny' and r.size_on_disk > 0 for r in info.repos), info
" 2> "$TMP/hfhub.err"
  check "huggingface_hub's scan_cache_dir sees the downloaded repository" "[ $? -eq 0 ]"
else
  echo "skip huggingface_hub is not installed: its reading of the cache is not checked"
fi
n=$(wc -l < "$LOG")
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/tiny > "$TMP/d2.txt" 2>/dev/null
check "the second run uses the cache without asking the Hub" "cmp -s $TMP/d2.txt $TMP/ref.txt && [ \$(wc -l < $LOG) -eq $n ]"

# 3. a download cut mid-file resumes where it stopped
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/resume > /dev/null 2> "$TMP/r1.err"; rc=$?
INC=$(find "$C/models--test-org--resume/blobs" -name '*.incomplete' 2>/dev/null | head -1)
check "a cut download fails, keeping $CUT of $SIZE bytes to resume" "[ $rc -ne 0 ] && grep -q 'run again to resume' $TMP/r1.err && [ -n \"$INC\" ] && [ \$(stat -c %s \"$INC\") -eq $CUT ]"
check "nothing of it appears under snapshots/" "! [ -e $C/models--test-org--resume/snapshots/*/model.safetensors ]"
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/resume > "$TMP/r2.txt" 2> "$TMP/r2.err"
check "the next run resumes and generates as the original" "cmp -s $TMP/r2.txt $TMP/ref.txt"
check "(without a terminal, one line per file downloaded)" "grep -q '^memtune: downloaded model.safetensors (1.0 MB)' $TMP/r2.err"
check "it asked for bytes=$CUT- and got only the $((SIZE - CUT)) missing bytes" "grep -q \"^GET /cdn/test-org/resume/$SHA bytes=$CUT- $((SIZE - CUT))\$\" $LOG"
check "the whole file fetched once in all ($CUT + $((SIZE - CUT)))" "[ \$(grep '^GET /cdn/test-org/resume/' $LOG | awk '{s += \$4} END {print s}') -eq $SIZE ]"

# 4. a checksum mismatch is refused
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/corrupt > /dev/null 2> "$TMP/c1.err"; rc=$?
check "a wrong checksum is refused" "[ $rc -ne 0 ] && grep -q 'checksum mismatch' $TMP/c1.err"
check "and its partial blob removed, nothing under snapshots/" "[ -z \"\$(ls $C/models--test-org--corrupt/blobs | grep $SHA)\" ] && ! [ -e $C/models--test-org--corrupt/snapshots/*/model.safetensors ]"

# 5. a gated repository
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/gated > /dev/null 2> "$TMP/t1.err"; rc=$?
check "a gated repository without a token: 401, naming HF_TOKEN" "[ $rc -ne 0 ] && grep -q '401' $TMP/t1.err && grep -q 'HF_TOKEN' $TMP/t1.err"
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" HF_TOKEN=hf_test gen --model test-org/gated > "$TMP/t2.txt" 2>/dev/null
check "with HF_TOKEN it downloads" "cmp -s $TMP/t2.txt $TMP/ref.txt"
check "the token went to the Hub only as a Bearer header (never in a URL, never to the CDN host)" "! grep -q 'hf_test\|TOKEN-SENT-TO-CDN' $LOG && grep -q '^GET /cdn/test-org/gated/' $LOG"

# 6. a GGUF repository and a quantization suffix
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/tiny-GGUF > /dev/null 2> "$TMP/q4.err"; rc=$?
check "a repository of several GGUFs without a suffix asks for one" "[ $rc -ne 0 ] && grep -q ':Q4_K_M' $TMP/q4.err"
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/tiny-GGUF:Q8_0 > "$TMP/q1.txt" 2> "$TMP/q1.err"
check ":Q8_0 picks tiny.Q8_0.gguf (same text as that file)" "cmp -s $TMP/q1.txt $TMP/ref_q8.txt"
check "and fetches only it" "grep -q 'resolve/[0-9a-f]*/tiny.Q8_0.gguf' $LOG && ! grep -q 'tiny.F32.gguf' $LOG"
HF_HUB_CACHE="$C" HF_ENDPOINT=$DEAD gen --model test-org/tiny-GGUF:q8_0 > "$TMP/q2.txt" 2>/dev/null
check "the suffix matches case-insensitively (from the cache, offline)" "cmp -s $TMP/q2.txt $TMP/ref_q8.txt"
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/tiny-GGUF:Q4_K_M > /dev/null 2> "$TMP/q3.err"; rc=$?
check "a suffix no GGUF carries is refused, listing the GGUF files" "[ $rc -ne 0 ] && grep -q 'no GGUF file matches :Q4_K_M' $TMP/q3.err && grep -q 'tiny.F32.gguf' $TMP/q3.err"

# 7. a renamed repository (relative redirects, followed for the file list and each file)
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/old-name > "$TMP/m1.txt" 2> "$TMP/m1.err"
check "a renamed repository is followed to its new name" "cmp -s $TMP/m1.txt $TMP/ref.txt && grep -q '^HEAD /test-org/old-name/resolve/' $LOG"

# 8. other errors, and paths before names
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/missing > /dev/null 2> "$TMP/e1.err"; rc=$?
check "no such repository (the Hub's 401 + RepoNotFound without a token): says so, and names HF_TOKEN" "[ $rc -ne 0 ] && grep -q '401: no such repository' $TMP/e1.err && grep -q HF_TOKEN $TMP/e1.err"
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" HF_TOKEN=hf_test gen --model test-org/missing > /dev/null 2> "$TMP/e1b.err"; rc=$?
check "with a token: 404 no such repository" "[ $rc -ne 0 ] && grep -q '404: no such repository' $TMP/e1b.err"
HF_HUB_CACHE="$C" HF_ENDPOINT="$EP" gen --model test-org/tiny@v9 > /dev/null 2> "$TMP/e2.err"; rc=$?
check "no such revision: 404 naming it" "[ $rc -ne 0 ] && grep -q 'revision v9' $TMP/e2.err"
HF_HUB_CACHE="$C" HF_ENDPOINT=$DEAD gen --model test-org/elsewhere > /dev/null 2> "$TMP/e3.err"; rc=$?
check "no network: curl's message, and that the cache has no copy" "[ $rc -ne 0 ] && grep -q 'cannot reach $DEAD' $TMP/e3.err && grep -q 'has no complete copy' $TMP/e3.err"
mkdir -p "$TMP/paths/local"; cp "$TMP/tiny.Q8_0.gguf" "$TMP/paths/local/model.gguf"
(cd "$TMP/paths" && HF_HUB_CACHE="$C" HF_ENDPOINT=$DEAD gen --model local/model.gguf > "$TMP/p1.txt" 2>/dev/null)
check "an existing path of the same shape is read as a path" "cmp -s $TMP/p1.txt $TMP/ref_q8.txt"
(cd "$TMP/paths" && HF_HUB_CACHE="$C" HF_ENDPOINT=$DEAD MEMTUNE_MODEL=test-org/tiny "$MT" info > "$TMP/p2.json" 2>/dev/null)
check "MEMTUNE_MODEL may be a name too (info, from the cache)" "grep -q '\"parameters\": 260032' $TMP/p2.json"
"$MT" generate --model /nonexistent/model.bin -n 1 > /dev/null 2> "$TMP/p3.err"; rc=$?
check "a missing absolute path is not taken for a name" "[ $rc -ne 0 ] && ! grep -q 'Hub' $TMP/p3.err"
exit $fail
