# multiload: the front door. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CACHE ?= $(HOME)/.cache/multiload
APT_PKGS := liburing-dev libhdf5-dev libdeflate-dev pkg-config
CC ?= gcc
C_TESTS := $(patsubst tests/c/%.c,build/tests/%,$(wildcard tests/c/test_*.c))
CORE_SRC := $(filter-out src/python/%,$(wildcard src/*.c))
CORE_FLAGS = -std=gnu11 -O1 -g -Wall -Wextra -Werror -Wno-missing-field-initializers -DML_HAVE_LIBDEFLATE \
	$(shell pkg-config --cflags hdf5 liburing libdeflate)
CORE_LIBS = $(shell pkg-config --libs hdf5 liburing libdeflate) -lpthread

.PHONY: demo test test-c test-py test-pread bench deps venv build check-asan check-tsan clean

# Install, build, stream a generated sample file and print throughput beside h5py.
demo: build
	$(PY) benchmarks/demo.py --cache $(CACHE)

# Install, build, run the C unit tests and pytest (both I/O modes).
test: build test-c test-py

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
	@$(PY) -c "import h5py, tables, pytest, hypothesis, pytest_timeout, numexpr, setuptools as s, sys; sys.exit(int(s.__version__.split('.')[0]) < 77)" 2>/dev/null || \
	  { echo ">> installing Python dependencies into $(VENV)"; $(PIP) install -q -U pip 'setuptools>=77' wheel 'numpy>=2' && \
	    $(PIP) install -q --no-build-isolation -e '.[test]'; }

# Build the extension (only what changed) and swap it in atomically, under a
# lock, so a running test never maps a half-written library.
build: venv
	@echo ">> building multiload._core"
	@flock /tmp/multiload-build.lock sh -c '$(PY) setup.py -q build_ext --build-lib build/lib 2>&1 | grep -v -i "warn\|^\s*$$\|!!\|\*\*\*\|^  " ; \
	  so=$$($(PY) -c "import sysconfig; print(\"_core\" + sysconfig.get_config_var(\"EXT_SUFFIX\"))"); \
	  test -f build/lib/multiload/$$so && cp build/lib/multiload/$$so multiload/.$$so.tmp && mv -f multiload/.$$so.tmp multiload/$$so'
	@$(PY) -c "import multiload; print('>> multiload', multiload.__version__, 'io:', multiload.io_mode())"

build/tests/%: tests/c/%.c $(CORE_SRC) $(wildcard src/*.h) $(wildcard tests/c/*.h)
	@mkdir -p build/tests
	$(CC) $(CORE_FLAGS) $(SAN) -Isrc -o $@ $< $(CORE_SRC) $(CORE_LIBS) -lz

# C unit tests: each program exits 0 (pass), 1 (fail) or 77 (skip).
test-c: deps $(C_TESTS)
	@fail=0; for t in $(C_TESTS); do $(RUN) $$t; rc=$$?; \
	  if [ $$rc = 0 ]; then echo "PASS $$t"; elif [ $$rc = 77 ]; then echo "SKIP $$t"; else echo "FAIL $$t"; fail=1; fi; done; exit $$fail

# pytest in the default I/O mode, then the streaming tests again with pread forced.
test-py: build
	$(PY) -m pytest -q tests
	MULTILOAD_IO=pread $(PY) -m pytest -q -m "not slow" tests

# Benchmarks beside h5py, PyTables, multitables and torch (FULL=1: larger).
bench: build
	$(PY) benchmarks/run.py --cache $(CACHE) $(if $(FULL),--full,)

# AddressSanitizer + UBSan: C tests and a pytest subset.
check-asan: venv
	rm -rf build/tests
	$(MAKE) test-c SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"
	MULTILOAD_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" MULTILOAD_LDFLAGS="-fsanitize=address,undefined" \
	  $(PIP) install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" PYTHONMALLOC=malloc \
	  ASAN_OPTIONS=detect_leaks=0 $(PY) -m pytest -q -x -m "not slow" tests/test_streamer_api.py; rc=$$?; \
	  $(PIP) install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1; rm -rf build/tests; exit $$rc

# ThreadSanitizer on the C tests.
check-tsan: deps
	rm -rf build/tests
	$(MAKE) test-c SAN="-fsanitize=thread"; rc=$$?; rm -rf build/tests; exit $$rc

clean:
	rm -rf build multiload/*.so *.egg-info
