#!/bin/sh
# run.sh - build and run the chunk-index fuzz target; `make fuzz-index` calls it.
#
# Makes the seed corpus (make_corpus.py, with .venv's h5py) when it is missing
# or older than the script, builds fuzz_chunk_index.c with the core's
# src/chunk_index.c and src/error.c (CORE_FLAGS, as the C tests are built),
# then runs it for FUZZ_TIME seconds under libFuzzer (clang, ASan+UBSan,
# fork mode so one crash does not end the run) or, where clang has no
# libFuzzer, under mutate_main.c's loop (gcc, ASan+UBSan). Crashing inputs
# land in $OUT/crashes; each new one is replayed once to print what broke.
# Exits 1 if the run found any, so a CI smoke fails on a finding.
#
# Environment: PY, CC, CORE_FLAGS, CORE_LIBS (from the Makefile); FUZZ_TIME
# (seconds, default 300); FUZZ_ENGINE (auto, libfuzzer or loop); FUZZ_JOBS
# (libFuzzer processes, default 1); OUT (default build/fuzz/index).
# `run.sh --have-libfuzzer` only says, by its status, whether clang can
# build a libFuzzer target.
set -eu

SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
have_libfuzzer() {
    command -v clang >/dev/null 2>&1 || return 1
    printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return (int)(d && n); }\n' |
        clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1
}
if [ "${1:-}" = --have-libfuzzer ]; then
    have_libfuzzer
    exit
fi

: "${PY:=.venv/bin/python}" "${CC:=gcc}" "${CORE_FLAGS:=-std=gnu11 -O1 -g -Wall -Wextra -Werror}" "${CORE_LIBS:=}"
: "${FUZZ_TIME:=300}" "${FUZZ_ENGINE:=auto}" "${FUZZ_JOBS:=1}" "${OUT:=build/fuzz/index}"
CORE="src/chunk_index.c src/error.c"
# --wrap=pread: the target counts and caps the core's reads (fuzz_chunk_index.c).
FLAGS="$CORE_FLAGS $SAN -Isrc -Ifuzz/index -Wl,--wrap=pread"
mkdir -p "$OUT/seeds" "$OUT/corpus" "$OUT/crashes"

if [ ! -s "$OUT/seeds.txt" ] || [ fuzz/index/make_corpus.py -nt "$OUT/seeds.txt" ]; then
    echo ">> writing the seed corpus into $OUT/seeds"
    rm -f "$OUT"/seeds/*.bin
    "$PY" fuzz/index/make_corpus.py "$OUT/seeds" >"$OUT/seeds.txt.tmp"
    mv "$OUT/seeds.txt.tmp" "$OUT/seeds.txt"
fi

engine=$FUZZ_ENGINE
if [ "$engine" = auto ]; then
    if have_libfuzzer; then engine=libfuzzer; else engine=loop; echo ">> clang has no libFuzzer: using the mutation loop"; fi
fi
# Inputs newer than this marker are this run's findings.
marker="$OUT/.run-start"
touch "$marker"
case $engine in
libfuzzer)
    bin="$OUT/fuzz_chunk_index"
    echo ">> building $bin (clang, libFuzzer + ASan + UBSan)"
    # shellcheck disable=SC2086 # the flag lists are meant to split
    clang $FLAGS -fsanitize=fuzzer -o "$bin" fuzz/index/fuzz_chunk_index.c $CORE $CORE_LIBS
    replay="$bin"
    echo ">> libFuzzer for ${FUZZ_TIME}s, $FUZZ_JOBS job(s); log: $OUT/libfuzzer.log"
    # Fork mode with -ignore_crashes: the run lasts FUZZ_TIME and collects every crash, not only the first.
    ASAN_OPTIONS=detect_leaks=0 "$bin" -fork="$FUZZ_JOBS" -ignore_crashes=1 -max_total_time="$FUZZ_TIME" \
        -timeout=20 -rss_limit_mb=2048 -dict=fuzz/index/index.dict -artifact_prefix="$OUT/crashes/" \
        "$OUT/corpus" "$OUT/seeds" >"$OUT/libfuzzer.log" 2>&1 || true
    grep -E '^#[0-9]+: cov:' "$OUT/libfuzzer.log" | tail -n 1 | sed 's/^/>> /'
    ;;
loop)
    bin="$OUT/mutate_main"
    echo ">> building $bin ($CC, mutation loop + ASan + UBSan)"
    # shellcheck disable=SC2086
    $CC $FLAGS -o "$bin" fuzz/index/mutate_main.c fuzz/index/fuzz_chunk_index.c $CORE $CORE_LIBS
    replay="$bin -r"
    echo ">> mutation loop for ${FUZZ_TIME}s; log: $OUT/loop.log"
    # handle_abort: a broken invariant (abort) gets ASan's stack trace too.
    ASAN_OPTIONS=detect_leaks=0:handle_abort=1 "$bin" -t "$FUZZ_TIME" -o "$OUT/crashes" "$OUT/corpus" "$OUT/seeds" \
        >"$OUT/loop.log" 2>&1 || true
    grep -E '^mutate_main: (done|[0-9]+ crashes)' "$OUT/loop.log" | sed 's/^/>> /'
    ;;
*)
    echo "FUZZ_ENGINE must be auto, libfuzzer or loop, not '$engine'" >&2
    exit 2
    ;;
esac

found=$(find "$OUT/crashes" -type f -newer "$marker" | sort)
if [ -z "$found" ]; then
    echo ">> no crash"
    exit 0
fi
echo ">> $(echo "$found" | wc -l) crashing input(s) in $OUT/crashes; what broke, by kind:"
for f in $found; do
    # shellcheck disable=SC2086
    ASAN_OPTIONS=detect_leaks=0:handle_abort=1 timeout 60 $replay "$f" 2>&1 |
        grep -m 1 -E 'invariant broken|ERROR: (AddressSanitizer|libFuzzer)|runtime error' |
        sed -E 's/==[0-9]+==//; s/(0x)?[0-9a-f]{4,}|[0-9]+/N/g' || echo "(did not reproduce)"
done | sort | uniq -c | sed 's/^/>> /'
echo ">> replay one: $replay FILE (FUZZ_INDEX_VERBOSE=2 prints the walk)"
exit 1
