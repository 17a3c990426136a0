#!/usr/bin/env bash
# Item 3 of issue 26: merging a memory-tuned adapter is refused, naming the adapter, what
# cannot be merged (its memory experts) and why, and writes nothing; the C API refuses to save
# a model with memory experts attached (mt_model_save), instead of dropping them silently.
# A LoRA-only adapter still merges.
source "$(dirname "$0")/../fault/common.sh"
TMP="$ROOT/$BUILD/tmp/cli_merge_memory"; rm -rf "$TMP"; mkdir -p "$TMP"
make_data "$TMP"
train_ok $(args_for memory "$TMP" 10 0) --out "$TMP/mem" 2> "$TMP/mem.err" || { echo "memory run failed"; cat "$TMP/mem.err"; exit 1; }
check "the memory-tuned adapter holds experts (setup)" "[ -f $TMP/mem/adapter/mome_config.json ]"

"$MT" merge --model "$M" --adapter "$TMP/mem/adapter" --out "$TMP/merged" 2> "$TMP/merge.err"; rc=$?
check "merge of a memory-tuned adapter fails" "[ $rc -ne 0 ]"
check "... naming the adapter, the memory experts and why" \
  "grep -q '$TMP/mem/adapter holds memory experts' $TMP/merge.err && grep -q 'cannot be merged' $TMP/merge.err && grep -q 'router' $TMP/merge.err"
check "... and writes nothing" "[ ! -e $TMP/merged ]"

cat > "$TMP/save.c" <<'C'
#include <memtune.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    mt_model *m;
    mt_adapter_set *a;
    if (mt_model_load(argv[1], NULL, &m) || mt_adapter_set_load(m, argv[2], &a)) return 2;
    mt_status s = mt_model_save(m, argv[3], MT_FORMAT_HF);
    printf("%d %s\n", (int)s, s ? mt_last_error() : "saved");
    mt_model_free(m);
    mt_adapter_set_free(a);
    return s == MT_ERR_UNSUPPORTED && strstr(mt_last_error(), "memory experts") ? 0 : 1;
}
C
SANFLAGS=""; [ "$BUILD" = build-asan ] && SANFLAGS="-fsanitize=address,undefined"
cc -std=c11 $SANFLAGS -Iinclude "$TMP/save.c" -L"$BUILD" -Wl,-rpath,"$ROOT/$BUILD" -lmemtune -o "$TMP/save" 2> "$TMP/cc.err" || cat "$TMP/cc.err"
check "C API: mt_model_save with memory experts attached is MT_ERR_UNSUPPORTED naming them, and writes nothing" \
  "$TMP/save $M $TMP/mem/adapter $TMP/saved > $TMP/save.out && [ ! -e $TMP/saved ]" || cat "$TMP/save.out"

train_ok $(args_for lora "$TMP" 4 0) --out "$TMP/lora" 2> /dev/null
"$MT" merge --model "$M" --adapter "$TMP/lora/adapter" --out "$TMP/merged_lora" -q; rc=$?
check "a LoRA adapter still merges" "[ $rc -eq 0 ] && [ -f $TMP/merged_lora/model.safetensors ]"
exit $fail
