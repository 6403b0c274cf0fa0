#!/bin/sh
# run.sh - the metadata pre-check fuzz target (fuzz_meta.c over src/h5precheck.c and
# the parsers under it); `make fuzz-meta` calls it, fuzz/parser_fuzz.sh runs it.
# The loop's words are the chunk index's: "locate ok" = inputs parsed, "with chunks" =
# pre-checks that passed (harness.h).
HARNESS=fuzz/meta TARGET=fuzz_meta \
    CORE="src/h5precheck.c src/h5super.c src/h5ohdr.c src/h5group.c src/h5dmsg.c src/h5meta.c src/source.c src/error.c" \
    LEAKS=1 MAX_LEN=65536 VERBOSE_HINT="" exec sh fuzz/parser_fuzz.sh "$@"
