"""Every ```python block of docs/scale-out.md runs, in order, in one fresh
process (the Dask examples start worker processes, the Ray ones a Ray
cluster), in a temporary directory. The blocks check their own results
against h5py where they read data.
"""

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")
pytest.importorskip("ray.data")

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "scale-out.md"

# A script, not exec() in pytest: the processes scheduler and LocalCluster start
# spawned workers, which re-import the main module (hence the guard).
RUNNER = """
import re, sys, warnings
def main():
    text = open(sys.argv[1]).read()
    namespace = {"__name__": "docs_example"}
    blocks = re.findall(r"^```python\\n(.*?)^```", text, re.M | re.S)
    assert len(blocks) >= 5, len(blocks)
    for i, code in enumerate(blocks):
        print(f"@@block {i + 1}/{len(blocks)}: {code.strip().splitlines()[0]}", flush=True)
        exec(compile(code, f"scale-out.md block {i + 1}", "exec"), namespace)
    print("@@all blocks ran", flush=True)
if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_scale_out_guide_examples_run(tmp_path):
    runner = tmp_path / "run_doc.py"
    runner.write_text(RUNNER)
    # The Ray workers import this checkout's multiload (they inherit the environment).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, str(runner), str(DOC)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=380)
    last = [line for line in out.stdout.splitlines() if line.startswith("@@")]
    assert out.returncode == 0 and last and last[-1] == "@@all blocks ran", \
        f"failed after {last[-1] if last else 'no block'}:\n{out.stderr[-3000:]}"
