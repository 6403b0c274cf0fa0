"""Property tests of the block arithmetic shared by the C core and the
Streamer, against a pure-Python model of multitables' semantics:

- a non-cyclic stream has N // B full blocks, plus the short last one when
  remainder=True; block k is rows [k*B, min((k+1)*B, N));
- a cyclic stream is endless; block k is rows (k*B + j) mod N for j < B,
  which is one run, or two when it wraps around the end.
"""

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from multiload import _core

pytestmark = pytest.mark.timeout(120)

U64 = 2**64 - 1
rows = st.integers(min_value=1, max_value=10**6)
big_rows = st.integers(min_value=1, max_value=U64)


def model_n_blocks(n, b, cyclic, remainder):
    if cyclic:
        return None
    return n // b + (1 if remainder and n % b else 0)


def model_rows(n, b, cyclic, k):
    """The dataset rows of block k, as a list (small n only)."""
    if cyclic:
        return [(k * b + j) % n for j in range(b)]
    return list(range(k * b, min((k + 1) * b, n)))


def expand(runs):
    return [r for start, count in runs for r in range(start, start + count)]


@given(rows, rows, st.booleans(), st.booleans())
@example(1, 1, False, False)
@example(10, 3, False, True)
@example(9, 3, False, True)
def test_n_blocks(n, b, cyclic, remainder):
    b = min(b, n)  # the Streamer never asks for more rows than the dataset has
    assert _core.n_blocks(n, b, cyclic, remainder) == model_n_blocks(n, b, cyclic, remainder)


@given(big_rows, big_rows, st.booleans())
def test_n_blocks_large(n, b, remainder):
    assume(b <= n)
    assert _core.n_blocks(n, b, False, remainder) == model_n_blocks(n, b, False, remainder)
    assert _core.n_blocks(n, b, True, remainder) is None


@given(st.data(), st.integers(1, 3000), st.integers(1, 3000))
@settings(max_examples=300)
def test_block_runs_non_cyclic(data, n, b):
    b = min(b, n)
    remainder = data.draw(st.booleans())
    n_blocks = model_n_blocks(n, b, False, remainder)
    k = data.draw(st.integers(0, n_blocks - 1))
    runs = _core.block_runs(n, b, False, k)
    assert len(runs) == 1
    assert expand(runs) == model_rows(n, b, False, k)


@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(0, 10**6))
@settings(max_examples=300)
@example(10, 3, 3)       # wraps: rows 9, 0, 1
@example(10, 10, 7)      # B == N: one whole pass from row 0
@example(7, 7, 0)
@example(1, 1, 10**6)
def test_block_runs_cyclic(n, b, k):
    b = min(b, n)
    runs = _core.block_runs(n, b, True, k)
    assert 1 <= len(runs) <= 2
    assert all(count > 0 for _, count in runs)
    assert expand(runs) == model_rows(n, b, True, k)
    if len(runs) == 2:
        assert runs[1][0] == 0 and runs[0][0] + runs[0][1] == n


@given(st.integers(1, 500), st.integers(1, 500))
def test_non_cyclic_blocks_partition_the_dataset(n, b):
    b = min(b, n)
    covered = []
    for k in range(model_n_blocks(n, b, False, True)):
        covered += expand(_core.block_runs(n, b, False, k))
    assert covered == list(range(n))
    full = model_n_blocks(n, b, False, False)
    assert len(covered) - full * b == n % b


@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 4))
def test_cyclic_blocks_are_the_dataset_repeated(n, b, passes):
    b = min(b, n)
    count = -(-passes * n // b)
    stream = []
    for k in range(count):
        stream += expand(_core.block_runs(n, b, True, k))
    assert stream == [i % n for i in range(count * b)]


@given(big_rows, big_rows, st.integers(0, U64))
def test_block_runs_cyclic_no_overflow(n, b, k):
    """k*B overflows 64 bits in an endless stream; the start must still be
    (k*B) mod N, computed exactly."""
    assume(b <= n)
    runs = _core.block_runs(n, b, True, k)
    start = (k * b) % n
    assert runs[0][0] == start
    assert sum(c for _, c in runs) == b
    first = min(b, n - start)
    assert runs[0][1] == first
    if first < b:
        assert runs[1] == (0, b - first)


@pytest.mark.parametrize("n,b", [(0, 1), (1, 0), (0, 0)])
def test_block_runs_rejects_empty(n, b):
    with pytest.raises(ValueError):
        _core.block_runs(n, b, False, 0)
