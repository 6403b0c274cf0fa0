"""The Streamer over the file matrix × its modes, compared with h5py.

Every case (layout × dtype × shape × filter, see h5files.py) is streamed in
a few modes picked by rotation, so that across the matrix every value of
every mode dimension (ordered, cyclic, n_procs 1/2/4, read_ahead 1 and
more, remainder, block sizes that divide N and that do not) meets every
kind of dataset; two representative datasets run the full mode grid.
"""

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

import multiload
from h5files import BLOCK_DIVIDES, BLOCK_REMAINDER, assert_same, case_list, drain, take

pytestmark = pytest.mark.timeout(60)

CASES = case_list()


@dataclass(frozen=True)
class Mode:
    ordered: bool
    cyclic: bool
    n_procs: int
    read_ahead: int
    remainder: bool
    block: int

    def __str__(self):
        return (f"{'ord' if self.ordered else 'unord'}-{'cyc' if self.cyclic else 'once'}"
                f"-p{self.n_procs}-ra{self.read_ahead}-{'rem' if self.remainder else 'norem'}"
                f"-B{self.block}")


#: Rotation: case i runs the four modes ROTATION[i % 2 :: 2]. Each half
#: holds ordered and unordered, each with cyclic and not, so every case
#: meets all four; n_procs, read_ahead, remainder and the block size vary
#: between the halves and between the cases.
ROTATION = [
    Mode(True, False, 1, 1, False, BLOCK_DIVIDES),
    Mode(False, False, 2, 5, True, BLOCK_REMAINDER),
    Mode(True, True, 4, 9, False, BLOCK_REMAINDER),
    Mode(False, True, 1, 3, False, 37),
    Mode(False, False, 4, 3, True, 37),
    Mode(True, False, 1, 2, False, 37),
    Mode(False, True, 2, 1, False, BLOCK_DIVIDES),
    Mode(True, True, 4, 1, False, BLOCK_REMAINDER),
]


def _rotated():
    for i, case in enumerate(CASES):
        for mode in ROTATION[i % 2::2]:
            yield pytest.param(case, mode, id=f"{case}-{mode}")


def _full_grid():
    for ordered, cyclic, n_procs, read_ahead, remainder, block in itertools.product(
            (True, False), (False, True), (1, 2, 4), (1, 4), (False, True),
            (BLOCK_DIVIDES, BLOCK_REMAINDER)):
        if cyclic and remainder:
            continue  # remainder only means something for a finite stream
        yield Mode(ordered, cyclic, n_procs, read_ahead, remainder, block)


GRID_CASES = [c for c in CASES if c.name in ("2d-deflate", "tables-zlib")]
assert len(GRID_CASES) == 2


def open_queue(files, case, mode, **extra):
    """get_queue with the mode's arguments; checks the slow-path warning."""
    stream = multiload.Streamer(files[case.file])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        queue = stream.get_queue(case.path, n_procs=mode.n_procs, read_ahead=mode.read_ahead,
                                 cyclic=mode.cyclic, block_size=mode.block, ordered=mode.ordered,
                                 remainder=mode.remainder, **extra)
    slow = [w for w in caught if issubclass(w.category, multiload.SlowPathWarning)]
    if case.slow:
        assert len(slow) == 1, "a slow-path dataset must say so once"
        assert case.path in str(slow[0].message)
    else:
        assert not slow, f"unexpected SlowPathWarning: {slow[0].message}"
    return stream, queue


def check_stream(files, case, mode, expected, **extra):
    """Stream `case` in `mode` and compare every block with `expected`
    (h5py's reading of the whole dataset, or of one field)."""
    n = expected.shape[0]
    stream, queue = open_queue(files, case, mode, **extra)
    with queue:
        B = min(mode.block, n)
        assert queue.block_size == B
        if "field" not in extra:
            assert queue.dtype == expected.dtype and queue.shape == expected.shape
        if not mode.cyclic:
            n_blocks = n // B + (1 if mode.remainder and n % B else 0)
            assert queue.n_blocks == n_blocks
            blocks = drain(queue)
            indices = [b[0] for b in blocks]
            if mode.ordered:
                assert indices == list(range(n_blocks)), "ordered mode must hand out blocks in order"
            else:
                assert sorted(indices) == list(range(n_blocks)), \
                    "unordered mode must hand out each block exactly once"
            for index, start, rows, data in blocks:
                assert start == index * B
                assert rows == min(B, n - start)
                assert_same(data, expected[start:start + rows], f"block {index}")
            assert queue.get() is multiload.QueueClosed
        else:
            assert queue.n_blocks is None
            # three passes over the dataset, wrapping as multitables does
            count = math.ceil(3 * n / B)
            blocks = take(queue, count)
            indices = [b[0] for b in blocks]
            if mode.ordered:
                assert indices == list(range(count))
            else:
                assert len(set(indices)) == count, "a cyclic block was handed out twice"
                # Blocks not yet taken each hold a slot: at most read_ahead gaps.
                missing = set(range(max(indices) + 1)) - set(indices)
                assert len(missing) <= mode.read_ahead
            for index, start, rows, data in blocks:
                rows_wanted = (index * B + np.arange(B)) % n
                assert start == rows_wanted[0]
                assert rows == B
                assert_same(data, expected[rows_wanted], f"cyclic block {index}")


@pytest.mark.parametrize("case,mode", list(_rotated()))
def test_blocks_match_h5py(files, truth, case, mode):
    check_stream(files, case, mode, truth(case))


@pytest.mark.parametrize("mode", list(_full_grid()), ids=str)
@pytest.mark.parametrize("case", GRID_CASES, ids=str)
def test_full_mode_grid(files, truth, case, mode):
    check_stream(files, case, mode, truth(case))


def _field_params():
    i = 0
    for case in CASES:
        for field in case.fields:
            mode = ROTATION[i % len(ROTATION)]
            i += 1
            yield pytest.param(case, field, mode, id=f"{case}-{field}-{mode}")


@pytest.mark.parametrize("case,field,mode", list(_field_params()))
def test_field_matches_h5py_column(files, truth, case, field, mode):
    expected = truth(case)[field]
    check_stream(files, case, mode, expected, field=field)


def check_row(row, want, j):
    """One generator row against h5py's row `want` (an array for N-D data,
    else a numpy scalar of the same type, np.void for tables)."""
    if isinstance(want, np.ndarray):
        assert_same(row, want, f"row {j}")
    else:
        assert type(row) is type(want) and row.dtype == want.dtype, f"row {j}: {row!r}"
        assert row == want, f"row {j}: {row!r} != {want!r}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_generator_equals_dataset(files, truth, case):
    i = CASES.index(case)
    n_procs = (1, 2, 4)[i % 3]
    block = (BLOCK_DIVIDES, BLOCK_REMAINDER, 37)[i % 3]
    expected = truth(case)
    stream = multiload.Streamer(files[case.file])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", multiload.SlowPathWarning)
        rows = list(stream.get_generator(case.path, n_procs=n_procs, block_size=block, ordered=True))
    assert len(rows) == expected.shape[0], "the generator must yield every row, remainder included"
    for j, row in enumerate(rows):
        check_row(row, expected[j], j)


@pytest.mark.parametrize("case", CASES[::5], ids=str)
def test_generator_is_in_dataset_order_even_unordered(files, truth, case):
    """ordered=False (the default) still yields rows in dataset order, so a
    prefix of a cyclic generator is whole passes (multitables' test_cycle
    relies on that)."""
    expected = truth(case)
    n = expected.shape[0]
    stream = multiload.Streamer(files[case.file])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", multiload.SlowPathWarning)
        rows = list(stream.get_generator(case.path, n_procs=4, block_size=BLOCK_REMAINDER, ordered=False))
        gen = stream.get_generator(case.path, n_procs=4, cyclic=True, block_size=BLOCK_REMAINDER)
        cyc = list(itertools.islice(gen, 2 * n))
        gen.close()
    assert len(rows) == n
    for j, row in enumerate(rows):
        check_row(row, expected[j], j)
    for j, row in enumerate(cyc):
        check_row(row, expected[j % n], j)


@pytest.mark.parametrize("case", CASES[::4], ids=str)
def test_cyclic_generator_wraps(files, truth, case):
    expected = truth(case)
    n = expected.shape[0]
    stream = multiload.Streamer(files[case.file])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", multiload.SlowPathWarning)
        gen = stream.get_generator(case.path, n_procs=2, cyclic=True, block_size=BLOCK_REMAINDER,
                                   ordered=True)
        rows = list(itertools.islice(gen, 3 * n + 5))
        gen.close()
    assert len(rows) == 3 * n + 5
    for j, row in enumerate(rows):
        check_row(row, expected[j % n], j)


@pytest.mark.parametrize("block", [BLOCK_DIVIDES, BLOCK_REMAINDER, 37, 1, 5000])
@pytest.mark.parametrize("case", CASES[::3], ids=str)
def test_get_remainder(files, truth, case, block):
    expected = truth(case)
    n = expected.shape[0]
    stream = multiload.Streamer(files[case.file])
    rest = stream.get_remainder(case.path, block)
    B = min(block, n)
    assert_same(rest, expected[n - n % B:], "remainder")
    if n % B == 0:
        assert rest.shape[0] == 0
    for field in case.fields[:2]:
        assert_same(stream.get_remainder(case.path, block, field=field), expected[field][n - n % B:],
                    f"remainder of field {field}")


@pytest.mark.parametrize("case", CASES[::7], ids=str)
def test_queue_blocks_plus_remainder_are_the_dataset(files, truth, case):
    """multitables' recipe: a queue without remainder, then get_remainder."""
    expected = truth(case)
    stream = multiload.Streamer(files[case.file])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", multiload.SlowPathWarning)
        queue = stream.get_queue(case.path, n_procs=2, block_size=BLOCK_REMAINDER, ordered=True)
    parts = [b[3] for b in drain(queue)]
    parts.append(stream.get_remainder(case.path, queue.block_size))
    whole = np.concatenate(parts)
    np.testing.assert_array_equal(whole, expected)
    assert all(p.dtype == expected.dtype for p in parts)
