"""The cold path (src/readahead.c): buffered streams that hint the blocks
ahead of their readers, direct streams that read batches of blocks per
worker. Forced on (MULTILOAD_COLD=1), off (=0) and automatic, in both I/O
engines, buffered and direct, every block equals h5py's reading of the same
rows: contiguous data at an unaligned offset with rows that straddle pages,
odd row sizes, chunked, deflated tiles, compound rows; sequential, wrapped
cyclic, block-shuffled and sharded schedules. stats() says which path ran,
and the automatic choice follows the page cache (a file just written is
left alone; one dropped from the cache is hinted). A failed batch still
gives each block its own error; the others stay exact."""

import os

import h5py
import numpy as np
import pytest

import multiload
import reliability_files as rf
from h5files import GET_TIMEOUT, supports_o_direct

pytestmark = pytest.mark.timeout(120)

IO_MODES = ("io_uring", "pread")
COLD = ("1", "0", "auto")
B = 97  # rows per block: never a divisor, so the last block is short and cyclic blocks wrap



@pytest.fixture(scope="module")
def cold_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("cold") / "cold.h5")
    rng = np.random.default_rng(13)
    i2 = rng.integers(-2**15, 2**15, size=(1001, 3, 37), dtype="<i2")  # 222-byte rows
    i2[:, 0, 0] = np.arange(1001)
    u1 = rng.integers(0, 256, size=(5003, 7), dtype="u1")  # 7-byte rows
    t = np.zeros(2003, dtype=[("a", "<i4"), ("b", "<f8"), ("c", "u1")])  # 13-byte rows
    t["a"] = np.arange(2003)
    t["b"] = rng.standard_normal(2003)
    t["c"] = rng.integers(0, 256, 2003)
    with h5py.File(fn, "w") as f:
        f.attrs["pad"] = np.arange(77)  # the data off any alignment
        f["contig"] = i2
        f["odd_rows"] = u1
        f.create_dataset("chunked", data=i2, chunks=(64, 3, 37))
        f.create_dataset("deflate", data=i2, chunks=(50, 3, 10), compression="gzip", shuffle=True)
        f.create_dataset("table", data=t, chunks=(100,), compression="gzip")
    truth = {}
    with h5py.File(fn, "r") as f:
        for k in f:
            truth[k] = f[k][...]
    return fn, truth


def drain(q):
    """{start row: (rows, block copy)} of every guard; fails on an error or a repeat."""
    out = {}
    while True:
        g = q.get(timeout=GET_TIMEOUT)
        if g is multiload.QueueClosed:
            return out
        with g as block:
            assert g.start not in out, f"block at row {g.start} handed out twice"
            out[g.start] = (g.rows, np.array(block))


def check(blocks, data):
    n = len(data)
    for start, (rows, got) in blocks.items():
        want = data[(start + np.arange(rows)) % n]
        assert got.dtype == data.dtype
        np.testing.assert_array_equal(got, want, err_msg=f"block at row {start}")


def stream(fn, path, cold, monkeypatch, **kw):
    monkeypatch.setenv("MULTILOAD_COLD", cold)
    kw.setdefault("n_procs", 2)
    q = multiload.Streamer(fn).get_queue(path, block_size=B, **kw)
    with q:
        if kw.get("cyclic"):
            blocks = {}
            for _ in range(3 * q.shape[0] // B):  # three passes and a wrap
                g = q.get(timeout=GET_TIMEOUT)
                with g as block:
                    blocks.setdefault(g.start, (g.rows, np.array(block)))
        else:
            blocks = drain(q)
    return blocks, q.stats()  # closed: the workers' counts are final


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("io_mode", IO_MODES)
@pytest.mark.parametrize("cold", COLD)
@pytest.mark.parametrize("path", ["contig", "odd_rows", "chunked", "deflate", "table"])
def test_cold_paths_equal_h5py(cold_file, monkeypatch, path, cold, io_mode, direct):
    fn, truth = cold_file
    if direct and not supports_o_direct(fn):
        pytest.skip("this filesystem refuses O_DIRECT (test_streamer_direct covers the refusal)")
    blocks, st = stream(fn, path, cold, monkeypatch, io_mode=io_mode, direct=direct, remainder=True,
                        ordered=True)
    data = truth[path]
    assert sorted(blocks) == list(range(0, len(data), B))
    check(blocks, data)
    if direct:
        # The default read_ahead gives every worker a batch; off: one block each.
        assert st["prefetch_steps"] == 0
        if cold == "0":
            assert st["batch_blocks"] == 1 and st["batched_blocks"] == 0
        else:
            assert st["batch_blocks"] > 1 and st["batched_blocks"] > 0, st
    else:
        assert st["batch_blocks"] == 1 and st["batched_blocks"] == 0
        if cold == "1":
            assert st["prefetch_steps"] >= 1 and st["resident_steps"] == 0, st
        elif cold == "0":
            assert st["prefetch_steps"] == 0 and st["resident_steps"] == 0, st


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("kw", [dict(cyclic=True, ordered=True), dict(shuffle="block", seed=3, remainder=True),
                                dict(shuffle="block", seed=4, world_size=3, rank=1),
                                dict(world_size=2, rank=0, ordered=True)],
                         ids=["cyclic", "shuffled", "shuffled-shard", "shard"])
@pytest.mark.parametrize("path", ["contig", "deflate"])
def test_cold_schedules_equal_h5py(cold_file, monkeypatch, path, kw, direct):
    """The blocks ahead are the schedule's, whatever it is: the same blocks
    as with the cold path off, each equal to h5py's rows."""
    fn, truth = cold_file
    if direct and not supports_o_direct(fn):
        pytest.skip("this filesystem refuses O_DIRECT")
    on, st = stream(fn, path, "1", monkeypatch, direct=direct, **kw)
    off, _ = stream(fn, path, "0", monkeypatch, direct=direct, **kw)
    assert sorted(on) == sorted(off)
    check(on, truth[path])
    assert (st["batched_blocks"] > 0) if direct else (st["prefetch_steps"] >= 1), st


def test_direct_batches_with_small_read_ahead(cold_file, monkeypatch):
    """An explicit read_ahead bounds the batch: every worker and the consumer keep a slot."""
    fn, truth = cold_file
    if not supports_o_direct(fn):
        pytest.skip("this filesystem refuses O_DIRECT")
    for read_ahead, batch in ((3, 1), (9, 3), (30, 10)):
        blocks, st = stream(fn, "contig", "auto", monkeypatch, direct=True, read_ahead=read_ahead,
                            remainder=True)
        assert st["batch_blocks"] == batch, (read_ahead, st)
        check(blocks, truth["contig"])


def _cached(fn):
    """True if the file's first and last pages are in the page cache."""
    fd = os.open(fn, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for off in (0, max(0, size - 1) // 4096 * 4096):
            try:
                os.preadv(fd, [bytearray(1)], off, os.RWF_NOWAIT)
            except BlockingIOError:
                return False
        return True
    finally:
        os.close(fd)


def _drop(fn):
    fd = os.open(fn, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_auto_follows_the_page_cache(tmp_path, monkeypatch):
    """Automatic: a file in the page cache is sampled and left alone; the
    same file dropped from the cache is hinted; the rows are h5py's both times."""
    fn = str(tmp_path / "big.h5")
    # 64 MiB: 8 steps of 8 MiB, more than the kernel's own readahead from
    # the first block reaches (read_ahead_kb, up to 8 MiB here).
    data = np.arange(64 * 2**20 // 4, dtype="<i4").reshape(-1, 1024)
    with h5py.File(fn, "w") as f:
        f["x"] = data
    monkeypatch.delenv("MULTILOAD_COLD", raising=False)
    rf.truth(fn, "x")  # read it all: cached
    q = multiload.Streamer(fn).get_queue("x", n_procs=2, block_size=256)
    with q:
        warm = drain(q)
    st = q.stats()  # closed: the workers' counts are final
    check(warm, data)
    assert st["prefetch_steps"] == 0 and st["resident_steps"] >= 1, st

    _drop(fn)
    if _cached(fn):
        pytest.skip("POSIX_FADV_DONTNEED keeps this filesystem's pages (tmpfs?)")
    q = multiload.Streamer(fn).get_queue("x", n_procs=2, block_size=256)
    with q:
        cold = drain(q)
    st = q.stats()
    check(cold, data)
    assert st["prefetch_steps"] >= 1, st


def direct_batches(fn, path, io_mode, monkeypatch):
    """Drain a direct queue of rf.BLOCK-row blocks read in batches: (blocks, errors) as rf.drain."""
    monkeypatch.setenv("MULTILOAD_COLD", "1")
    q = multiload.Streamer(fn).get_queue(path, n_procs=2, block_size=rf.BLOCK, io_mode=io_mode, direct=True)
    with q:
        out = rf.drain(q)
    st = q.stats()
    assert st["batch_blocks"] > 1, st
    return out


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_direct_batch_failure_names_each_block(tmp_path, monkeypatch, io_mode):
    """A file cut inside the data: the batch holding the cut fails and is
    read again block by block, so exactly the blocks past the cut raise,
    each naming itself, and every other block is exact."""
    fn = str(tmp_path / "cut.h5")
    off = rf.write_contig_last(fn)
    if not supports_o_direct(fn):
        pytest.skip("this filesystem refuses O_DIRECT")
    cut_row = 1234
    rf.set_eof(fn, off + cut_row * rf.COLS * 4 + 5)
    blocks, errors = direct_batches(fn, "contig", io_mode, monkeypatch)
    bad = list(range(cut_row // rf.BLOCK, rf.N // rf.BLOCK))
    assert sorted(rf.block_of(e) for e in errors) == bad, errors
    for e in errors:
        assert isinstance(e, OSError) and "file truncated" in str(e) and fn in str(e), e
    assert sorted(blocks) == [k for k in range(rf.N // rf.BLOCK) if k not in bad]
    rf.check_blocks(blocks, rf.values())


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_direct_batch_under_injected_faults(tmp_path, monkeypatch, io_mode):
    """A quarter of all reads fail: every block is exact or an EIO naming
    it (a batch that fails is read again per block, so an error that
    recurs reaches its block); none is lost, none handed out twice."""
    fn = rf.write_data_file(str(tmp_path / "faults.h5"))
    if not supports_o_direct(fn):
        pytest.skip("this filesystem refuses O_DIRECT")
    with rf.faults("eio~0.25/11"):
        blocks, errors = direct_batches(fn, "gz", io_mode, monkeypatch)
    bad = sorted(rf.block_of(e) for e in errors)
    for e in errors:
        assert isinstance(e, OSError) and f"block {rf.block_of(e)}:" in str(e) and "'gz'" in str(e), e
    assert sorted(bad + list(blocks)) == list(range(rf.N // rf.BLOCK)), "a block was lost or duplicated"
    rf.check_blocks(blocks, rf.values())
