"""The C unit tests (tests/c/test_*.c), run by pytest so its report lists them.

Each program is built by the Makefile (``make build/tests/<name>``, a no-op
when up to date) and run with a timeout. Exit codes follow liburing's
test/helpers.h: 0 pass, 1 fail, 77 skip. A skip is accepted only when the
program says io_uring is unavailable; any other skip is a failure.

The programs pick their I/O modes themselves (they cover io_uring and pread
explicitly), so they are marked ``slow``: left out of the second pytest pass
that only forces MULTILOAD_IO=pread. Together they run in about a second.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "tests" / "c").glob("test_*.c"))
TIMEOUT = 120

pytestmark = [pytest.mark.slow, pytest.mark.timeout(TIMEOUT + 60)]


@pytest.fixture(scope="module")
def binaries():
    """Build every C test program once (make's own up-to-date check)."""
    targets = [f"build/tests/{src.stem}" for src in SOURCES]
    r = subprocess.run(["make", "-s", "--no-print-directory", *targets], cwd=ROOT,
                       capture_output=True, text=True, timeout=TIMEOUT)
    if r.returncode != 0:
        pytest.fail(f"building the C tests failed:\n{r.stdout}\n{r.stderr}")
    return {src.stem: ROOT / "build" / "tests" / src.stem for src in SOURCES}


@pytest.mark.parametrize("name", [src.stem for src in SOURCES])
def test_c_program(binaries, name):
    env = {k: v for k, v in os.environ.items() if k not in ("MULTILOAD_IO", "MULTILOAD_FAULTS")}
    r = subprocess.run([str(binaries[name])], cwd=ROOT, capture_output=True, text=True,
                       timeout=TIMEOUT, env=env)
    out = (r.stdout + r.stderr).strip()
    if r.returncode == 77:
        if "io_uring" in out:
            pytest.skip(out.splitlines()[-1])
        pytest.fail(f"{name} skipped for a reason other than io_uring:\n{out}")
    assert r.returncode == 0, f"{name} exited {r.returncode}:\n{out}"
    assert f"ok tests/c/{name}.c" in r.stdout, f"{name} exited 0 without finishing:\n{out}"
