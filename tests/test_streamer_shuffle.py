"""Streamer.get_queue(shuffle=, seed=, epoch=, rank=, world_size=) against
h5py and an independent reading of the schedule's definition.

The expected block order is computed here from schedule.c's and perm.c's
opening comments only: unsharded block j is sequential block j
(shuffle='none') or P(j), P the keyed Feistel bijection of perm.c with salt
0 (test_order.RefPerm, a pure-Python reimplementation); rank r of R gets
unsharded blocks kR + r for k < n // R.
"""

import h5py
import numpy as np
import pytest

import multiload
from h5files import GET_TIMEOUT
from test_order import RefPerm

pytestmark = pytest.mark.timeout(60)

N = 1000
B = 37  # 27 full blocks (n % 2 = 1, n % 3 = 0) and a 1-row remainder block (28 with it)


@pytest.fixture(scope="module")
def shuf_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("shuffle") / "shuffle.h5"
    rng = np.random.default_rng(5)
    data = rng.integers(0, 2**31, size=(N, 3), dtype=np.int64)
    data[:, 0] = np.arange(N)  # every row distinct
    with h5py.File(path, "w") as f:
        f.create_dataset("contig", data=data)
        f.create_dataset("chunked", data=data, chunks=(16, 3), compression="gzip")
    return str(path), data


def unsharded_blocks(n, shuffle, seed, epoch):
    if shuffle in (None, "none"):
        return list(range(n))
    p = RefPerm(n, seed, epoch, 0)
    return [p(j) for j in range(n)]


def expected_blocks(n, shuffle, seed, epoch, rank, world_size):
    u = unsharded_blocks(n, shuffle, seed, epoch)
    return [u[k * world_size + rank] for k in range(n // world_size)]


def n_unsharded(remainder):
    return N // B + (1 if remainder and N % B else 0)


def drain_guards(queue):
    """(index, start, rows, copy of the block) for every guard, in order."""
    out = []
    while True:
        guard = queue.get(timeout=GET_TIMEOUT)
        if guard is multiload.QueueClosed:
            return out
        with guard as block:
            out.append((guard.index, guard.start, guard.rows, np.array(block)))


def stream(path, dset, **kw):
    with multiload.Streamer(path) as s:
        q = s.get_queue(dset, block_size=B, **kw)
        try:
            return q.n_blocks, drain_guards(q)
        finally:
            q.close()


@pytest.mark.parametrize("dset", ["contig", "chunked"])
@pytest.mark.parametrize("remainder", [False, True])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [None, "none", "block"])
def test_blocks_match_h5py_and_partition(shuf_file, dset, shuffle, world_size, remainder):
    path, data = shuf_file
    n = n_unsharded(remainder)
    seen = {}
    counts = []
    for rank in range(world_size):
        n_blocks, got = stream(path, dset, ordered=True, remainder=remainder, shuffle=shuffle, seed=42,
                               epoch=3, rank=rank, world_size=world_size, n_procs=3)
        want = expected_blocks(n, shuffle, 42, 3, rank, world_size)
        assert n_blocks == len(want) == n // world_size
        assert [g[0] for g in got] == list(range(len(want)))
        assert [g[1] for g in got] == [b * B for b in want]
        for index, start, rows, block in got:
            assert rows == min(B, N - start)
            np.testing.assert_array_equal(block, data[start:start + rows])
            assert start // B not in seen, "a block handed out twice across ranks"
            seen[start // B] = rank
        counts.append(len(got))
    assert len(set(counts)) == 1  # equal block counts per rank
    assert len(seen) == n // world_size * world_size


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_unordered_same_blocks(shuf_file, world_size):
    path, data = shuf_file
    n = n_unsharded(False)
    for rank in range(world_size):
        _, got = stream(path, "chunked", ordered=False, shuffle="block", seed=7, epoch=1, rank=rank,
                        world_size=world_size, n_procs=4)
        want = expected_blocks(n, "block", 7, 1, rank, world_size)
        assert sorted(g[1] for g in got) == sorted(b * B for b in want)
        for _, start, rows, block in got:
            np.testing.assert_array_equal(block, data[start:start + rows])


def starts(path, **kw):
    return [g[1] for g in stream(path, "contig", ordered=True, **kw)[1]]


def test_epochs_and_seeds(shuf_file):
    path, _ = shuf_file
    e0 = starts(path, shuffle="block", seed=1, epoch=0)
    assert e0 == starts(path, shuffle="block", seed=1, epoch=0)  # same seed, same order
    assert e0 != starts(path, shuffle="block", seed=1, epoch=1)  # new epoch, new order
    assert e0 != starts(path, shuffle="block", seed=2, epoch=0)
    assert sorted(e0) == [k * B for k in range(N // B)]  # every block once
    assert e0 != sorted(e0)


def test_defaults_unchanged(shuf_file):
    path, _ = shuf_file
    want = [k * B for k in range(N // B)]
    assert starts(path) == want
    assert starts(path, shuffle=None) == want
    assert starts(path, shuffle="none", seed=9, epoch=9) == want  # seed/epoch only key 'block'
    with multiload.Streamer(path) as s:
        q = s.get_queue("contig", block_size=B)
        assert (q.shuffle, q.seed, q.epoch, q.rank, q.world_size) == ("none", 0, 0, 0, 1)
        q.close()


def test_more_ranks_than_blocks(shuf_file):
    path, _ = shuf_file
    n_blocks, got = stream(path, "contig", ordered=True, rank=30, world_size=31, remainder=True)
    assert n_blocks == 0 and got == []
    n_blocks, got = stream(path, "contig", ordered=True, rank=0, world_size=28, remainder=True)
    assert n_blocks == 1 and [g[1] for g in got] == [0]


@pytest.mark.parametrize("kw, match", [
    (dict(shuffle="row"), "shuffle must be"),
    (dict(shuffle=True), "shuffle must be"),
    (dict(shuffle="block", cyclic=True), "cyclic=False"),
    (dict(world_size=2, cyclic=True), "cyclic=False"),
    (dict(world_size=0), r"world_size must be an integer in \[1,"),
    (dict(rank=-1, world_size=2), r"rank must be in \[0, world_size\)"),
    (dict(rank=2, world_size=2), r"rank must be in \[0, world_size\)"),
    (dict(rank=1), r"rank must be in \[0, world_size\)"),
    (dict(seed=-1, shuffle="block"), r"seed must be in \[0, 2\*\*64\)"),
    (dict(epoch=2**64), r"epoch must be in \[0, 2\*\*64\)"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(world_size=True), "world_size must be an integer"),
])
def test_bad_arguments(shuf_file, kw, match):
    path, _ = shuf_file
    with multiload.Streamer(path) as s:
        with pytest.raises(ValueError, match=match):
            s.get_queue("contig", block_size=B, **kw)


def test_cyclic_default_still_allowed(shuf_file):
    path, data = shuf_file
    with multiload.Streamer(path) as s:
        q = s.get_queue("contig", block_size=B, cyclic=True, ordered=True, shuffle="none", world_size=1)
        g = q.get(timeout=GET_TIMEOUT)
        with g as block:
            np.testing.assert_array_equal(block, data[:B])
        q.close()


def test_binding_keywords(shuf_file):
    """Layout.stream's schedule keywords (stream_type.c), below get_queue's checks."""
    path, data = shuf_file
    layout = multiload._core.Layout(path, "contig")
    base = dict(n_workers=2, read_ahead=3, block_rows=B, cyclic=False, ordered=True, remainder=False)
    s = layout.stream(**base, permuted=True, seed=5, epoch=2, shard_rank=1, shard_count=2)
    got = []
    while (g := s.take(GET_TIMEOUT)) is not None:
        with g as block:
            np.testing.assert_array_equal(block, data[g.start:g.start + g.rows])
        got.append(g.start // B)
    s.close()
    assert got == expected_blocks(N // B, "block", 5, 2, 1, 2)
    for kw, match in [(dict(permuted=True, cyclic=True), "cannot be cyclic"),
                      (dict(shard_count=0), "shard_count >= 1"),
                      (dict(shard_rank=2, shard_count=2), "shard_rank < shard_count"),
                      (dict(shard_count=2, cyclic=True), "cyclic=False")]:
        with pytest.raises(ValueError, match=match):
            layout.stream(**{**base, **kw})
