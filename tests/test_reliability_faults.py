"""Injected I/O faults (MULTILOAD_FAULTS) in both I/O engines: EIO reaches
get() as an OSError naming errno, file, dataset and block; the other blocks
are exact; short reads and EAGAIN are invisible; allocation failure is an
OutOfMemoryError (MemoryError and OSError, ENOMEM); the queue closes; no descriptor or thread is left behind."""

import errno
import os

import pytest

import multiload
import reliability_files as rf
from reliability_files import BLOCK, IO_MODES, N, faults

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return rf.write_data_file(str(tmp_path_factory.mktemp("faults") / "data.h5"))


@pytest.fixture(scope="module")
def expected(data_file):
    return {p: rf.truth(data_file, p) for p in ("contig", "gz", "f32", "table")}


@pytest.fixture
def no_leaks():
    """Descriptors and threads after the test are those before it."""
    fds, threads = rf.open_fds(), rf.n_threads()
    yield
    assert rf.open_fds() == fds, "file descriptors leaked"
    assert rf.n_threads() == threads, "worker threads left running"


def check_oom(e, fn, path, block=None):
    """Out of memory: a MemoryError that is also an OSError (ENOMEM), naming
    the file, the dataset and, from get(), the block."""
    assert isinstance(e, multiload.OutOfMemoryError) and isinstance(e, MemoryError), repr(e)
    assert isinstance(e, OSError) and e.errno == errno.ENOMEM and e.filename == fn, repr(e)
    msg = str(e)
    assert ("out of memory" in msg or "cannot allocate" in msg) and f"'{path}'" in msg, msg
    if block is not None:
        assert f"block {block}:" in msg, msg


def check_io_error(e, fn, path, block):
    assert isinstance(e, OSError), repr(e)
    assert e.errno == errno.EIO, e
    msg = str(e)
    assert f"block {block}:" in msg and f"'{path}'" in msg and fn in msg, msg
    assert e.filename == fn


@pytest.mark.parametrize("io_mode", IO_MODES)
@pytest.mark.parametrize("path,nth,bad_block", [
    ("contig", 3, 2),  # one read per block: the 3rd read is block 2
    ("gz", 3, 1),      # two chunks per block, read in one batch: reads 3-4 are block 1
    ("f32", 1, 0),
])
def test_eio_nth_read(data_file, expected, no_leaks, io_mode, path, nth, bad_block):
    with faults(f"eio@{nth}"):
        q = multiload.Streamer(data_file).get_queue(path, n_procs=1, block_size=BLOCK, ordered=True,
                                                    io_mode=io_mode)
        with q:
            blocks, errors = rf.drain(q)
    assert len(errors) == 1, errors
    check_io_error(errors[0], data_file, path, bad_block)
    assert sorted(blocks) == [k for k in range(N // BLOCK) if k != bad_block]
    rf.check_blocks(blocks, expected[path])


@pytest.mark.parametrize("io_mode", IO_MODES)
@pytest.mark.parametrize("path", ["contig", "gz"])
def test_eio_fraction_of_reads(data_file, expected, no_leaks, io_mode, path):
    """A quarter of all reads fail, across three workers: every block is
    either exact or an EIO naming it; none is lost or duplicated."""
    with faults("eio~0.25/11"):
        q = multiload.Streamer(data_file).get_queue(path, n_procs=3, block_size=BLOCK, io_mode=io_mode)
        with q:
            blocks, errors = rf.drain(q)
        st = q.stats()
    assert errors, "a 25% fault rate over 20+ reads failed nothing"
    bad = []
    for e in errors:
        b = rf.block_of(e)
        check_io_error(e, data_file, path, b)
        bad.append(b)
    assert sorted(bad + list(blocks)) == list(range(N // BLOCK)), "a block was lost or duplicated"
    rf.check_blocks(blocks, expected[path])
    assert st["errors"] == len(errors)


@pytest.mark.parametrize("io_mode", IO_MODES)
@pytest.mark.parametrize("spec,path", [("short@1", "contig"), ("short~0.5/3", "contig"), ("short~0.5/3", "gz"),
                                       ("eagain@1", "gz"), ("eagain~0.4/5", "contig"),
                                       ("short~0.3/7,eagain~0.3", "table")])
def test_short_and_eagain_are_invisible(data_file, expected, no_leaks, io_mode, spec, path):
    with faults(spec):
        q = multiload.Streamer(data_file).get_queue(path, n_procs=2, block_size=BLOCK, ordered=True,
                                                    io_mode=io_mode)
        with q:
            blocks, errors = rf.drain(q)
    assert errors == []
    assert sorted(blocks) == list(range(N // BLOCK))
    rf.check_blocks(blocks, expected[path])


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_eio_then_close_mid_stream(data_file, no_leaks, io_mode):
    """Every read fails; the consumer sees errors, closes after three, and
    later gets say QueueClosed."""
    with faults("eio~1"):
        q = multiload.Streamer(data_file).get_queue("gz", n_procs=2, block_size=BLOCK, io_mode=io_mode)
        for _ in range(3):
            with pytest.raises(OSError) as ei:
                q.get(timeout=rf.GET_TIMEOUT)
            assert ei.value.errno == errno.EIO and "'gz'" in str(ei.value)
        q.close()
        assert q.get(timeout=rf.GET_TIMEOUT) is multiload.QueueClosed
        assert q.get() is multiload.QueueClosed


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_enomem_ring(data_file, no_leaks, io_mode):
    """The first checked allocation is the ring: get_queue raises MemoryError."""
    with faults("enomem@1"):
        with pytest.raises(MemoryError, match=r"cannot allocate .* slots .* dataset 'contig'") as ei:
            multiload.Streamer(data_file).get_queue("contig", n_procs=2, io_mode=io_mode)
        check_oom(ei.value, data_file, "contig")
        # the next allocation succeeds: a queue works again
        q = multiload.Streamer(data_file).get_queue("contig", n_procs=2, block_size=BLOCK, io_mode=io_mode)
        with q:
            blocks, errors = rf.drain(q)
    assert errors == [] and len(blocks) == N // BLOCK


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_enomem_one_worker(data_file, expected, no_leaks, io_mode):
    """One of two workers cannot allocate its reader: its error reaches the
    consumer on exactly one block; the healthy worker reads all the others."""
    with faults("enomem@2"):
        q = multiload.Streamer(data_file).get_queue("contig", n_procs=2, read_ahead=3, block_size=BLOCK,
                                                    io_mode=io_mode)
        with q:
            blocks, errors = rf.drain(q)
    assert len(errors) == 1, errors
    for e in errors:
        check_oom(e, data_file, "contig", rf.block_of(e))
    assert len(blocks) + len(errors) == N // BLOCK
    rf.check_blocks(blocks, expected["contig"])


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_enomem_only_worker(data_file, no_leaks, io_mode):
    """The only worker cannot start: every block carries the MemoryError;
    nothing hangs."""
    with faults("enomem@2"):
        q = multiload.Streamer(data_file).get_queue("contig", n_procs=1, block_size=BLOCK, io_mode=io_mode)
        with q:
            blocks, errors = rf.drain(q)
    assert blocks == {}
    assert len(errors) == N // BLOCK
    assert sorted(rf.block_of(e) for e in errors) == list(range(N // BLOCK))
    for e in errors:
        check_oom(e, data_file, "contig", rf.block_of(e))


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_enomem_chunk_scratch(data_file, expected, no_leaks, io_mode):
    """Allocations 1 and 2 are the ring and the worker's reader; the 3rd is
    the first block's chunk scratch buffer: block 0 fails, the rest are exact."""
    with faults("enomem@3"):
        q = multiload.Streamer(data_file).get_queue("gz", n_procs=1, block_size=BLOCK, ordered=True,
                                                    io_mode=io_mode)
        with q:
            blocks, errors = rf.drain(q)
    assert len(errors) == 1, errors
    check_oom(errors[0], data_file, "gz", 0)
    assert sorted(blocks) == list(range(1, N // BLOCK))
    rf.check_blocks(blocks, expected["gz"])


def test_eio_in_get_remainder(data_file, no_leaks):
    """The synchronous read path (get_remainder) raises too."""
    with faults("eio@1"):
        with pytest.raises(OSError) as ei:
            multiload.Streamer(data_file).get_remainder("contig", block_size=300)
    assert ei.value.errno == errno.EIO and "'contig'" in str(ei.value)
    assert ei.value.filename == data_file


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_slow_read_and_get_timeout(data_file, no_leaks, io_mode):
    """A read that stalls makes get(timeout) raise TimeoutError; the block
    arrives later, exact; close() then returns."""
    with faults("slow@1:1500"):
        q = multiload.Streamer(data_file).get_queue("contig", n_procs=1, block_size=BLOCK, ordered=True,
                                                    io_mode=io_mode)
        with q:
            with pytest.raises(TimeoutError):
                q.get(timeout=0.05)
            g = q.get(timeout=rf.GET_TIMEOUT)
            with g as block:
                assert (block == rf.values()[:BLOCK]).all()


def test_fault_counts_are_per_reload(data_file):
    """The n-th read counts from the last reload, whatever ran before."""
    with faults("eio@2"):
        for _ in range(2):
            _core_reload()
            q = multiload.Streamer(data_file).get_queue("contig", n_procs=1, block_size=BLOCK, ordered=True)
            with q:
                blocks, errors = rf.drain(q)
            assert [rf.block_of(e) for e in errors] == [1]


def _core_reload():
    from multiload import _core
    _core.fault_reload()


def test_faults_off_by_default():
    assert "MULTILOAD_FAULTS" not in os.environ or not os.environ["MULTILOAD_FAULTS"]
