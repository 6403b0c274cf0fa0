#!/bin/sh
# run.sh - the global-heap fuzz target (fuzz_gheap.c over src/gheap.c);
# `make fuzz-gheap` calls it, fuzz/parser_fuzz.sh runs it.
# --wrap=malloc,realloc: the target fails the allocation an input names (fuzz_gheap.c).
# MAX_LEN: the largest seed (a 120 KiB object, past the 64 KiB read window) with room to grow.
# The loop's words are the chunk index's: "locate ok" = headers read, "with chunks" = walks
# with objects (gheap_harness.h).
HARNESS=fuzz/gheap TARGET=fuzz_gheap CORE="src/gheap.c src/error.c" WRAP="-Wl,--wrap=malloc -Wl,--wrap=realloc" \
    LEAKS=1 MAX_LEN=262144 VERBOSE_HINT="(FUZZ_GHEAP_VERBOSE=2 prints every read and object)" \
    exec sh fuzz/parser_fuzz.sh "$@"
