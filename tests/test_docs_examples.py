"""Every ```python block of docs/streamer.md runs, in order, in one session.

The guide's first example writes the file the others read, so the blocks
share one namespace and run in a fresh temporary directory. A failing block
is reported with its number, the heading above it and its first line.
"""

import pathlib
import re
import warnings

import pytest

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "streamer.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def python_blocks(text):
    """[(heading, line number, code)] for every ```python block of text."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[:m.start()]
        headings = re.findall(r"^#+ (.*)$", before, re.M)
        blocks.append((headings[-1] if headings else "", before.count("\n") + 2, m.group(1)))
    return blocks


def test_doc_has_examples():
    assert len(python_blocks(DOC.read_text())) >= 10


@pytest.mark.timeout(120)
def test_streamer_guide_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("h5py")
    monkeypatch.chdir(tmp_path)
    # The guide's io_mode example holds in either mode; MULTILOAD_IO=pread runs must pass too.
    namespace = {"__name__": "docs_example"}
    for i, (heading, line, code) in enumerate(python_blocks(DOC.read_text())):
        try:
            with warnings.catch_warnings():
                compiled = compile(code, f"{DOC.name}:{line}", "exec")
                exec(compiled, namespace)
        except BaseException as e:  # noqa: BLE001 - report which example failed
            first = code.strip().splitlines()[0]
            pytest.fail(f"example {i + 1} under '{heading}' (line {line}: {first!r}) failed: "
                        f"{type(e).__name__}: {e}")
