#!/bin/sh
# parser_fuzz.sh - build and run one coverage-guided parser harness (fuzz/index,
# fuzz/gheap); each harness's run.sh sets what differs and execs this.
#
# Makes the seed corpus ($HARNESS/make_corpus.py, with .venv's h5py) when it is
# missing or older than the script, builds $HARNESS/$TARGET.c with the core's
# CORE sources (CORE_FLAGS, as the C tests are built), then runs it for
# FUZZ_TIME seconds under libFuzzer (clang, ASan+UBSan, fork mode so one crash
# does not end the run) or, where clang has no libFuzzer, under
# fuzz/index/mutate_main.c's loop (gcc, ASan+UBSan; it reads the target's
# outcome through fuzz/index/harness.h). Crashing inputs land in $OUT/crashes;
# each new one is replayed once to print what broke. Exits 1 if the run found
# any, so a CI smoke fails on a finding.
#
# Set by the harness: HARNESS (its folder), TARGET (its .c, without .c), CORE
# (core sources, the parser first), WRAP (link-time wraps), LEAKS (1: report
# leaks), MAX_LEN (libFuzzer's input cap, or empty), VERBOSE_HINT. From the
# Makefile: PY, CC, CORE_FLAGS, CORE_LIBS; FUZZ_TIME (seconds, default 300);
# FUZZ_ENGINE (auto, libfuzzer, loop, or coverage: report what the saved corpus
# covers of the parser with llvm-cov, no fuzzing); FUZZ_JOBS (libFuzzer
# processes, default 1); OUT (default build/fuzz/<harness>); SAN_EXTRA (more
# compiler flags, e.g. -fno-sanitize=nonnull-attribute to look past a known
# finding while it is being fixed). `parser_fuzz.sh --have-libfuzzer` only says,
# by its status, whether clang can build a libFuzzer target.
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
: "${FUZZ_TIME:=300}" "${FUZZ_ENGINE:=auto}" "${FUZZ_JOBS:=1}" "${SAN_EXTRA:=}"
: "${HARNESS:?}" "${TARGET:?}" "${CORE:?}" "${WRAP:=}" "${LEAKS:=1}" "${MAX_LEN:=}" "${VERBOSE_HINT:=}"
: "${OUT:=build/fuzz/$(basename "$HARNESS")}"
# -Ifuzz/index: harness.h (the outcome mutate_main.c reads), for every target.
FLAGS="$CORE_FLAGS $SAN $SAN_EXTRA -Isrc -I$HARNESS -Ifuzz/index $WRAP"
LEAK_OPT=$([ "$LEAKS" = 1 ] && echo detect_leaks=1 || echo detect_leaks=0)
mkdir -p "$OUT/seeds" "$OUT/corpus" "$OUT/crashes"

if [ ! -s "$OUT/seeds.txt" ] || [ "$HARNESS/make_corpus.py" -nt "$OUT/seeds.txt" ]; then
    echo ">> writing the seed corpus into $OUT/seeds"
    rm -f "$OUT"/seeds/*.bin
    "$PY" "$HARNESS/make_corpus.py" "$OUT/seeds" >"$OUT/seeds.txt.tmp"
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
    bin="$OUT/$TARGET"
    echo ">> building $bin (clang, libFuzzer + ASan + UBSan)"
    # shellcheck disable=SC2086 # the flag lists are meant to split
    clang $FLAGS -fsanitize=fuzzer -o "$bin" "$HARNESS/$TARGET.c" $CORE $CORE_LIBS
    replay="$bin"
    echo ">> libFuzzer for ${FUZZ_TIME}s, $FUZZ_JOBS job(s); log: $OUT/libfuzzer.log"
    # Fork mode with -ignore_crashes: the run lasts FUZZ_TIME and collects every crash, not only the first.
    # shellcheck disable=SC2046 # MAX_LEN: a harness whose seeds are large says how large inputs may grow.
    ASAN_OPTIONS=$LEAK_OPT "$bin" -fork="$FUZZ_JOBS" -ignore_crashes=1 -max_total_time="$FUZZ_TIME" \
        $([ -n "$MAX_LEN" ] && echo "-max_len=$MAX_LEN") \
        -timeout=20 -rss_limit_mb=2048 -dict="$(ls "$HARNESS"/*.dict)" -artifact_prefix="$OUT/crashes/" \
        "$OUT/corpus" "$OUT/seeds" >"$OUT/libfuzzer.log" 2>&1 || true
    grep -E '^#[0-9]+: cov:' "$OUT/libfuzzer.log" | tail -n 1 | sed 's/^/>> /'
    ;;
loop)
    bin="$OUT/mutate_main"
    echo ">> building $bin ($CC, mutation loop + ASan + UBSan)"
    # shellcheck disable=SC2086
    $CC $FLAGS -o "$bin" fuzz/index/mutate_main.c "$HARNESS/$TARGET.c" $CORE $CORE_LIBS
    replay="$bin -r"
    echo ">> mutation loop for ${FUZZ_TIME}s; log: $OUT/loop.log"
    # handle_abort: a broken invariant (abort) gets ASan's stack trace too. The loop's words are the
    # chunk index's (harness.h); another target says what they mean for it.
    ASAN_OPTIONS=$LEAK_OPT:handle_abort=1 "$bin" -t "$FUZZ_TIME" -o "$OUT/crashes" "$OUT/corpus" "$OUT/seeds" \
        >"$OUT/loop.log" 2>&1 || true
    grep -E '^mutate_main: (done|[0-9]+ crashes)' "$OUT/loop.log" | sed 's/^/>> /'
    ;;
coverage)
    # Not a campaign: replay the saved corpus and the seeds through a source-coverage build and print
    # what of the parser (the first of CORE) they reach (the corpus only grows in libFuzzer runs).
    bin="$OUT/${TARGET}_cov"
    parser=${CORE%% *}
    echo ">> building $bin (clang, source coverage, no sanitizers)"
    # shellcheck disable=SC2086
    clang $CORE_FLAGS -Isrc -I$HARNESS -Ifuzz/index $WRAP -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping \
        -o "$bin" "$HARNESS/$TARGET.c" $CORE $CORE_LIBS
    rm -f "$OUT"/cov-*.profraw
    LLVM_PROFILE_FILE="$OUT/cov-%p.profraw" "$bin" -runs=0 "$OUT/corpus" "$OUT/seeds" >"$OUT/coverage.log" 2>&1
    llvm-profdata merge -sparse -o "$OUT/cov.profdata" "$OUT"/cov-*.profraw
    llvm-cov report "$bin" -instr-profile="$OUT/cov.profdata" "$parser"
    llvm-cov show "$bin" -instr-profile="$OUT/cov.profdata" "$parser" >"$OUT/coverage.txt"
    echo ">> per line: $OUT/coverage.txt"
    exit 0
    ;;
*)
    echo "FUZZ_ENGINE must be auto, libfuzzer, loop or coverage, not '$engine'" >&2
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
    ASAN_OPTIONS=$LEAK_OPT:handle_abort=1 timeout 60 $replay "$f" 2>&1 |
        grep -m 1 -E 'invariant broken|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' |
        sed -E 's/==[0-9]+==//; s/(0x)?[0-9a-f]{4,}|[0-9]+/N/g' || echo "(did not reproduce)"
done | sort | uniq -c | sed 's/^/>> /'
echo ">> replay one: $replay FILE $VERBOSE_HINT"
exit 1
