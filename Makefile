# multiload: the front door. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CACHE ?= $(HOME)/.cache/multiload
APT_PKGS := liburing-dev libhdf5-dev libdeflate-dev libblosc-dev liblzf-dev libzstd-dev liblz4-dev libbz2-dev pkg-config
CC ?= gcc
# torch for multiload.torch's tests and the benchmarks (CPU build).
TORCH := torch==2.13.0
# uvloop: tests/test_async*.py run every test on asyncio's loop and on uvloop.
UVLOOP := uvloop==0.23.0
# Sanitizer builds of the C tests live in their own directories (TEST_BUILD),
# so they never mix with, or delete, the plain build another run is using.
TEST_BUILD ?= build/tests
C_TESTS := $(patsubst tests/c/%.c,$(TEST_BUILD)/%,$(wildcard tests/c/test_*.c))
C_TEST_TIMEOUT ?= 300
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# pytest files run against the ASan build of the extension: the Streamer and Reader APIs, bad
# input, faults, corrupt data, close and lifecycle, signals. The stress tests stay out: they
# assert a flat RSS, which ASan's quarantine of freed memory makes meaningless. So do the fork
# tests: GCC 12's ASan runtime does not lock its allocator across fork(), so a child forked while
# a worker allocates inherits a held allocator lock and hangs in malloc (seen with gdb; a plain
# build locks glibc's malloc across fork and passes).
ASAN_PYTESTS ?= tests/test_streamer_api.py tests/test_streamer_bad_input.py tests/test_streamer_close.py \
	tests/test_streamer_shuffle.py \
	tests/test_streamer_filters.py tests/test_streamer_types.py tests/test_streamer_direct.py tests/test_streamer_cold.py \
	tests/test_reader_api.py tests/test_reader_index.py tests/test_reader_parallel.py tests/test_reader_lifecycle.py \
	tests/test_reliability_badinput.py tests/test_reliability_faults.py tests/test_reliability_corrupt.py \
	tests/test_reliability_lifecycle.py tests/test_reliability_signals.py \
	tests/test_io_fallback.py tests/test_chunk_index.py tests/test_hostile_files.py tests/test_reader_vlarray.py \
	tests/test_order.py tests/test_error_map.py tests/test_core_binding.py tests/test_api_hazards.py \
	tests/test_batch_stream.py tests/test_type_conversions.py tests/test_filters_plugins.py tests/test_vlen_strings.py \
	tests/test_chunk_index4.py tests/test_newer_hdf5.py tests/test_reader_view.py tests/test_loader_process.py tests/test_file_loader.py \
	tests/test_writer.py tests/test_async.py tests/test_file_loader_cancel.py \
	tests/test_budget.py
# TSan: the same files (it refuses threads in a child forked from a threaded process anyway).
TSAN_PYTESTS ?= $(ASAN_PYTESTS)
ASAN_LDFLAGS := -fsanitize=address,undefined
# $(call sanitizer_build,NAME,CFLAGS,LDFLAGS): the extension built with those flags into
# build/NAME/lib (log: build/NAME-build.log, shown filtered on failure), the package's .py beside it.
sanitizer_build = mkdir -p build && MULTILOAD_CFLAGS="$(2)" MULTILOAD_LDFLAGS="$(3)" \
	$(PY) setup.py -q build_ext --build-temp build/$(1)/temp --build-lib build/$(1)/lib >build/$(1)-build.log 2>&1 || \
	{ grep -v -i "warn\|^\s*$$\|!!\|\*\*\*" build/$(1)-build.log; echo ">> $(1) build failed (full log: build/$(1)-build.log)"; exit 1; }; \
	cp multiload/*.py build/$(1)/lib/multiload/
# allocator_may_return_null: the huge-read-ahead test expects MemoryError, not an ASan abort.
ASAN_RUN_OPTIONS := detect_leaks=0:allocator_may_return_null=1
VALGRIND := valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite \
	--errors-for-leak-kinds=definite
CORE_SRC := $(filter-out src/python/%,$(wildcard src/*.c))
# The libraries and the optional codecs' -DML_HAVE_* flags: the probe setup.py uses too (probe_libs.py),
# run at most once per make, on first use; a codec whose library is missing is left out, not an error.
PROBE_CFLAGS = $(eval PROBE_CFLAGS := $$(shell $(PYTHON) probe_libs.py --cflags))$(PROBE_CFLAGS)
PROBE_LIBS = $(eval PROBE_LIBS := $$(shell $(PYTHON) probe_libs.py --libs 2>/dev/null))$(PROBE_LIBS)
CORE_FLAGS = -std=gnu11 -O1 -g -Wall -Wextra -Werror -Wno-missing-field-initializers $(PROBE_CFLAGS)
CORE_LIBS = $(PROBE_LIBS) -lpthread

.PHONY: demo test test-c c-tests-built test-py test-pread bench bench-deps deps venv build check-asan check-tsan check-valgrind libfuzzer fuzz-index fuzz-gheap fuzz-meta fuzz fuzz-smoke clean

# Install, build, stream a generated sample file and print throughput beside h5py.
demo: build
	$(PY) benchmarks/demo.py --cache $(CACHE)

# Install, build, run the C unit tests and pytest (both I/O modes), then the ASan+UBSan subset.
test: build test-c test-py check-asan fuzz-smoke

# Install system packages that are missing (apt-get, as root), else say what to run.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo ">> installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "multiload needs:$$missing -- run: sudo apt-get install -y$$missing"; exit 1; fi; \
	fi

# Create .venv with the package (editable) and its test dependencies.
venv: deps
	@test -x $(PY) || { echo ">> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c "import h5py, tables, pytest, hypothesis, pytest_timeout, numexpr, tqdm, hdf5plugin, netCDF4, pandas, hdf5storage, xarray, anndata, setuptools as s, sys; sys.exit(int(s.__version__.split('.')[0]) < 77)" 2>/dev/null || \
	  { echo ">> installing Python dependencies into $(VENV)"; $(PIP) install -q -U pip 'setuptools>=77' wheel 'numpy>=2' && \
	    $(PIP) install -q --no-build-isolation -e '.[test]'; }
	@$(PY) -c "import torch, torchdata" 2>/dev/null || { echo ">> installing torch (CPU), torchdata into $(VENV): the torch adapters' tests"; \
	  $(PIP) install -q $(TORCH) torchdata; }
	@$(PY) -c "import uvloop" 2>/dev/null || { echo ">> installing uvloop into $(VENV): the asyncio tests run on it too"; \
	  $(PIP) install -q $(UVLOOP); }
	@$(PY) -c "import dask.array, distributed, ray.data" 2>/dev/null || { echo ">> installing the dask and ray extras into $(VENV): multiload.dask's and multiload.ray's tests"; \
	  $(PIP) install -q 'dask[array]' distributed 'ray[data]'; }

# Build the extension (only what changed) and swap it in atomically, under a
# lock, so a running test never maps a half-written library.
build: venv
	@echo ">> building multiload._core"
	@mkdir -p build && flock /tmp/multiload-build.lock sh -c '$(PY) setup.py -q build_ext --build-lib build/lib >build/build.log 2>&1 || \
	    { grep -v -i "warn\|^\s*$$\|!!\|\*\*\*" build/build.log; echo ">> build failed (full log: build/build.log)"; exit 1; }; \
	  so=$$($(PY) -c "import sysconfig; print(\"_core\" + sysconfig.get_config_var(\"EXT_SUFFIX\"))"); \
	  cp build/lib/multiload/$$so multiload/.$$so.tmp && mv -f multiload/.$$so.tmp multiload/$$so'
	@$(PY) -c "import multiload; print('>> multiload', multiload.__version__, 'io:', multiload.io_mode())"

# The core is compiled once per TEST_BUILD (objects in TEST_BUILD/obj, in parallel) and every test
# program links those objects: compiling the whole core into each of the programs cost minutes of CI.
CORE_OBJS = $(patsubst src/%.c,$(TEST_BUILD)/obj/%.o,$(CORE_SRC))
NPROC := $(shell nproc 2>/dev/null || echo 2)
$(TEST_BUILD)/obj/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(TEST_BUILD)/obj
	@$(CC) $(CORE_FLAGS) $(SAN) -Isrc -c -o $@ $<
$(TEST_BUILD)/%: tests/c/%.c $(CORE_OBJS) $(wildcard tests/c/*.h)
	@$(CC) $(CORE_FLAGS) $(SAN) -Isrc -o $@ $< $(CORE_OBJS) $(CORE_LIBS) -lz

c-tests-built: $(C_TESTS)
# The objects are intermediate files of the pattern rules: keep them (make would delete them after each run).
.SECONDARY: $(CORE_OBJS)

# C unit tests: each program exits 0 (pass), 1 (fail) or 77 (skip); a hang fails after C_TEST_TIMEOUT s.
test-c: deps
	@echo ">> building the C tests in $(TEST_BUILD)"
	@$(MAKE) --no-print-directory -j$(NPROC) c-tests-built TEST_BUILD=$(TEST_BUILD) SAN="$(SAN)"
	@fail=0; for t in $(C_TESTS); do timeout -k 5 $(C_TEST_TIMEOUT) $(RUN) $$t; rc=$$?; \
	  if [ $$rc = 0 ]; then echo "PASS $$t"; elif [ $$rc = 77 ]; then echo "SKIP $$t"; else echo "FAIL $$t"; fail=1; fi; done; exit $$fail

# pytest in the default I/O mode, then the tests whose reads go through the I/O engine again with
# pread forced (the engine is io.c alone: parsers, type conversions, filters and the other suites
# read the same bytes whichever engine moved them, so a second pass of them only costs CI time).
PREAD_PYTESTS ?= tests/test_streamer_api.py tests/test_streamer_matrix.py tests/test_streamer_close.py \
	tests/test_streamer_direct.py tests/test_streamer_filters.py tests/test_streamer_shuffle.py \
	tests/test_streamer_bad_input.py tests/test_streamer_types.py tests/test_reader_api.py tests/test_reader_index.py \
	tests/test_reader_parallel.py tests/test_reader_lifecycle.py tests/test_reader_view.py \
	tests/test_reliability_faults.py tests/test_reliability_corrupt.py tests/test_reliability_lifecycle.py \
	tests/test_reliability_signals.py tests/test_reliability_badinput.py tests/test_io_fallback.py \
	tests/test_batch_stream.py tests/test_layout_read.py tests/test_loader_process.py tests/test_file_loader.py tests/test_file_loader_process.py \
	tests/test_async.py tests/test_budget.py tests/test_file_loader_cancel.py
test-py: build
	@# tests/test_fuzz_regressions.py runs once, in fuzz-smoke (which `make test` runs after this).
	$(PY) -m pytest -q --durations=15 --ignore=tests/test_fuzz_regressions.py tests
	MULTILOAD_IO=pread $(PY) -m pytest -q -m "not slow" $(PREAD_PYTESTS)

# Benchmarks beside h5py, PyTables, multitables, torch and the machine's limits (FULL=1: larger).
bench: build bench-deps
	$(PY) benchmarks/run.py --cache $(CACHE) $(if $(FULL),--full,)

# What the benchmarks need: fio (apt-get, as root), matplotlib and torch (CPU) in .venv,
# multitables 2.0.1 in .venv-multitables (it imports only under numpy<2; wrapt<2 for its guards).
MT_VENV := .venv-multitables
bench-deps: venv
	@command -v fio >/dev/null || { if [ "$$(id -u)" = 0 ]; then echo ">> installing fio"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null; \
	  else echo "benchmarks need fio -- run: sudo apt-get install -y fio"; exit 1; fi; }
	@$(PY) -c "import matplotlib, torch" 2>/dev/null || { echo ">> installing matplotlib, torch (CPU) into $(VENV)"; \
	  $(PIP) install -q matplotlib $(TORCH); }
	@$(MT_VENV)/bin/python -c "import multitables, torch, wrapt; assert int(wrapt.__version__.split('.')[0]) < 2" 2>/dev/null || \
	  { echo ">> installing multitables 2.0.1 (numpy<2, PyTables, torch) into $(MT_VENV)"; \
	    { test -x $(MT_VENV)/bin/python || $(PYTHON) -m venv $(MT_VENV); } && \
	    $(MT_VENV)/bin/pip install -q 'numpy<2' tables multitables==2.0.1 'wrapt<2' torch==2.13.0 || \
	    echo ">> multitables could not be installed: the report will say 'not available'"; }

# AddressSanitizer + UBSan: C tests, then pytest on an ASan build of the extension in build/asan (the installed one is untouched).
check-asan: venv
	$(MAKE) test-c TEST_BUILD=build/tests-asan SAN="$(ASAN_FLAGS)"
	$(call sanitizer_build,asan,$(ASAN_FLAGS),$(ASAN_LDFLAGS))
	@# -P: no current directory on sys.path, so PYTHONPATH's ASan copy is the multiload imported.
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" PYTHONMALLOC=malloc \
	  ASAN_OPTIONS=$(ASAN_RUN_OPTIONS) PYTHONPATH=build/asan/lib $(PY) -P -c \
	  "import multiload._core as c, sys; assert c.__file__.startswith('$(CURDIR)/build/asan/'), c.__file__; print('>> ASan build:', c.__file__)"
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" PYTHONMALLOC=malloc \
	  ASAN_OPTIONS=$(ASAN_RUN_OPTIONS) PYTHONPATH=build/asan/lib MULTILOAD_NATIVE_FUZZ_CASES=20 \
	  $(PY) -P -m pytest -q -x -m "not slow" -p no:cacheprovider --durations=15 $(ASAN_PYTESTS)

# ThreadSanitizer: C tests, then the same pytest subset on a TSan build of the extension in build/tsan.
check-tsan: venv
	$(MAKE) test-c TEST_BUILD=build/tests-tsan SAN="-fsanitize=thread"
	$(call sanitizer_build,tsan,-fsanitize=thread -O1 -g,-fsanitize=thread)
	@# A report makes the process exit 66 (TSan's exitcode), so make fails; tests/tsan.supp says what is suppressed and why.
	LD_PRELOAD="$$($(CC) -print-file-name=libtsan.so)" TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp allocator_may_return_null=1" \
	  PYTHONPATH=build/tsan/lib $(PY) -P -m pytest -q -x -m "not slow" -p no:cacheprovider $(TSAN_PYTESTS)

# valgrind memcheck on the C tests: any memory error or definite leak fails.
check-valgrind: deps
	@command -v valgrind >/dev/null || { echo "check-valgrind needs valgrind: apt-get install -y valgrind"; exit 1; }
	$(MAKE) test-c RUN="$(VALGRIND)"

# fuzz-index: seconds to run, and which engine (auto: libFuzzer if clang has it, else the loop).
FUZZ_TIME ?= 300
FUZZ_ENGINE ?= auto
# Install clang with libFuzzer (as root) unless the loop engine is asked for or it is there.
libfuzzer:
	@if [ "$(FUZZ_ENGINE)" != loop ] && ! sh fuzz/index/run.sh --have-libfuzzer; then \
	  if [ "$$(id -u)" = 0 ]; then echo ">> installing clang (libFuzzer)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null && \
	    { sh fuzz/index/run.sh --have-libfuzzer || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      libclang-rt-$$(clang -dumpversion | cut -d. -f1)-dev >/dev/null; } || echo ">> clang could not be installed"; \
	  else echo ">> libFuzzer missing -- run: sudo apt-get install -y clang libclang-rt-14-dev (using the mutation loop)"; fi; \
	fi

# $(call run_parser_fuzz,DIR): a coverage-guided parser harness's run.sh, with the build's flags.
run_parser_fuzz = PY="$(PY)" CC="$(CC)" CORE_FLAGS="$(CORE_FLAGS)" CORE_LIBS="$(CORE_LIBS)" FUZZ_TIME="$(FUZZ_TIME)" \
	  FUZZ_ENGINE="$(FUZZ_ENGINE)" sh fuzz/$(1)/run.sh

# Fuzz the chunk-index parser (fuzz/index) for FUZZ_TIME s with libFuzzer (clang installed as root if missing) or a mutation loop; crashes in build/fuzz/index/crashes.
fuzz-index: venv libfuzzer
	@$(call run_parser_fuzz,index)

# Fuzz the global heap parser (fuzz/gheap) for FUZZ_TIME s the same way (libFuzzer, clang installed as root if missing, or the loop); crashes in build/fuzz/gheap/crashes.
fuzz-gheap: venv libfuzzer
	@$(call run_parser_fuzz,gheap)

# Fuzz the metadata pre-check (fuzz/meta: superblock, object headers, groups, dataset messages) the same way; crashes in build/fuzz/meta/crashes.
fuzz-meta: venv libfuzzer
	@$(call run_parser_fuzz,meta)

# fuzz, fuzz-smoke: the end-to-end harness (fuzz/run.py); FUZZ_CASES (optional) instead of FUZZ_TIME.
FUZZ_TIME ?= 300
FUZZ_JOBS ?= 2
FUZZ_SMOKE_CASES ?= 1000
FUZZ_BUILD := build/fuzz
FUZZ_BINS := $(FUZZ_BUILD)/fuzz_read $(FUZZ_BUILD)/ref_read $(FUZZ_BUILD)/seeds/manifest.json

$(FUZZ_BUILD)/fuzz_read: fuzz/fuzz_read.c fuzz/plan.h fuzz/visit.h $(CORE_SRC) $(wildcard src/*.h)
	@mkdir -p $(FUZZ_BUILD)
	$(CC) $(CORE_FLAGS) $(ASAN_FLAGS) -Isrc -Ifuzz -o $@ fuzz/fuzz_read.c $(CORE_SRC) $(CORE_LIBS) -lz

$(FUZZ_BUILD)/ref_read: fuzz/ref_read.c fuzz/ref_filters.c fuzz/ref_filters.h fuzz/plan.h fuzz/visit.h
	@mkdir -p $(FUZZ_BUILD)
	@# ASan too: HDF5 is not instrumented, but its memcpy/memmove are intercepted, so an overflow
	@# inside HDF5 that a plain reader survives silently counts as hdf5-crash, not as ours.
	$(CC) $(CORE_FLAGS) $(ASAN_FLAGS) -Ifuzz -o $@ fuzz/ref_read.c fuzz/ref_filters.c $(CORE_LIBS) -lz

$(FUZZ_BUILD)/seeds/manifest.json: fuzz/seeds.py
	$(PY) fuzz/seeds.py $(FUZZ_BUILD)/seeds >/dev/null

# Fuzz multiload end to end for FUZZ_TIME s (mutated seeds, ASan, each block against HDF5's read); prints the summary table, findings in build/fuzz/findings.
fuzz: venv
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	$(PY) fuzz/run.py $(if $(FUZZ_CASES),--cases $(FUZZ_CASES),--time $(FUZZ_TIME)) --jobs $(FUZZ_JOBS)

# Bounded, reproducible fuzz smoke (FUZZ_SMOKE_CASES cases of campaign seed 1, about a minute) and every kept regression file; fails on any finding.
fuzz-smoke: venv build
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	$(PY) fuzz/run.py --cases $(FUZZ_SMOKE_CASES) --seed 1 --jobs $(FUZZ_JOBS) --out build/fuzz/smoke --fail-on-finding
	$(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz_regressions.py

clean:
	rm -rf build multiload/*.so *.egg-info
