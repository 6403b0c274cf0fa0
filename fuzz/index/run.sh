#!/bin/sh
# run.sh - the chunk-index fuzz target (fuzz_chunk_index.c over src/chunk_index.c);
# `make fuzz-index` calls it, fuzz/parser_fuzz.sh runs it.
# --wrap=pread: the target counts and caps the reads of its byte source (fuzz_chunk_index.c).
# Leaks stay off: the walk frees all it allocates on every path the C tests run.
HARNESS=fuzz/index TARGET=fuzz_chunk_index CORE="src/chunk_index.c src/chunk_index4.c src/h5meta.c src/source.c src/error.c" WRAP="-Wl,--wrap=pread" \
    LEAKS=0 VERBOSE_HINT="(FUZZ_INDEX_VERBOSE=2 prints the walk)" exec sh fuzz/parser_fuzz.sh "$@"
