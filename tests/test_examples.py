"""The scripts in examples/ run, and the resume example resumes exactly.

torch is a test dependency `make venv` installs, so the importorskip
below never skips under `make test`; it only names the dependency.
"""

import os
import re
import subprocess
import sys

import pytest

import multiload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(multiload.__file__)), OMP_NUM_THREADS="1")


def run(script, *args, cwd):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args], capture_output=True,
                       text=True, env=ENV, cwd=cwd, timeout=170)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.timeout(180)
def test_train_resume_gives_the_batches_of_an_uninterrupted_run(tmp_path):
    whole = run("train_resume.py", "--dir", str(tmp_path / "a"), cwd=tmp_path)
    first = run("train_resume.py", "--dir", str(tmp_path / "b"), "--stop-after", "25", cwd=tmp_path)
    assert "stopped after 25 steps" in first
    second = run("train_resume.py", "--dir", str(tmp_path / "b"), cwd=tmp_path)
    assert "resumed at epoch 0, step 25" in second
    digest = re.compile(r"digest ([0-9a-f]+)")
    assert digest.search(whole).group(1) == digest.search(second).group(1)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_torch_ddp_example(tmp_path):
    pytest.importorskip("torch")
    out = run("torch_ddp.py", "--world-size", "2", cwd=tmp_path)
    assert re.search(r"epoch 1: mean loss [0-9.]+, 4096 rows over 2 ranks, 32 batches each", out), out


@pytest.mark.timeout(180)
def test_loader_ranks_example(tmp_path):
    out = run("loader_ranks.py", "--consumers", "3", "--dir", str(tmp_path), cwd=tmp_path)
    assert "30 blocks over 3 consumers, one loader process" in out, out
    assert len(re.findall(r"rank \d: 10000 rows", out)) == 3, out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_async_feed_example(tmp_path, loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop")  # `make venv` installs it: never skipped under `make test`
    out = run("async_feed.py", "--dir", str(tmp_path), *(["--uvloop"] if loop == "uvloop" else []), cwd=tmp_path)
    assert "awaited 1000 requests at once, loaded 20 files: ok" in out, out
