"""Layout.read (the binding's synchronous row reader, behind
Streamer.get_remainder): one fetcher per Layout, made on first use and
taken in turn, compared with h5py for every storage; errors, fork and
descriptors."""

import errno
import os
import threading

import numpy as np
import pytest

from multiload import _core
import reliability_files as rf
from reliability_files import faults

pytestmark = pytest.mark.timeout(60)
h5py = pytest.importorskip("h5py")

N_ROWS = 997


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("lread") / "l.h5")
    rng = np.random.default_rng(3)
    data = rng.integers(0, 1 << 30, (N_ROWS, 5)).astype("<i4")
    with h5py.File(fn, "w") as f:
        f["contig"] = data
        f.create_dataset("chunked", data=data, chunks=(64, 5))
        f.create_dataset("gz", data=data, chunks=(50, 5), compression="gzip", shuffle=True)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((20, 5))
        h5py.h5d.create(f.id, b"compact", h5py.h5t.STD_I32LE, space, dcpl=dcpl).write(
            h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data[:20]))
        f.create_dataset("sparse", shape=(N_ROWS, 5), dtype="<i4", chunks=(100, 5), fillvalue=-7)
        f["sparse"][300:350] = data[300:350]
    return fn


SPANS = [(0, 1), (0, 64), (63, 65), (10, 500), (900, N_ROWS), (N_ROWS, N_ROWS), (5, 5), (0, N_ROWS)]


@pytest.mark.parametrize("name", ["contig", "chunked", "gz", "compact", "sparse"])
def test_repeated_reads_match_h5py(h5, name):
    lay = _core.Layout(h5, name)
    with h5py.File(h5) as f:
        truth = f[name][()]
    for start, stop in SPANS * 2:  # the same Layout, its one fetcher, many times
        stop = min(stop, len(truth))
        start = min(start, stop)
        got = lay.read(start, stop)
        assert got.dtype == truth.dtype and got.shape == truth[start:stop].shape
        np.testing.assert_array_equal(got, truth[start:stop])


def test_threads_share_one_layout(h5):
    lay = _core.Layout(h5, "gz")
    with h5py.File(h5) as f:
        truth = f["gz"][()]
    bad = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(60):
            a = int(rng.integers(0, N_ROWS))
            b = int(rng.integers(a, N_ROWS + 1))
            if not np.array_equal(lay.read(a, b), truth[a:b]):
                bad.append((a, b))

    ts = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts)
    assert bad == []


def test_range_errors_unchanged(h5):
    lay = _core.Layout(h5, "contig")
    with pytest.raises(IndexError) as ei:
        lay.read(0, N_ROWS + 1)
    assert str(ei.value) == f"rows 0..{N_ROWS + 1} outside dataset 'contig' with {N_ROWS} rows"
    with pytest.raises(IndexError):
        lay.read(9, 8)
    with pytest.raises(TypeError):
        lay.read(1)
    np.testing.assert_array_equal(lay.read(0, 3), lay.read(0, 3))


def test_read_error_then_read_again(h5):
    """A failed read raises OSError(EIO) naming file and dataset; the
    Layout's fetcher then reads on, exact."""
    lay = _core.Layout(h5, "contig")
    with h5py.File(h5) as f:
        truth = f["contig"][()]
    lay.read(0, 1)  # the fetcher exists before the fault
    with faults("eio@1"):
        with pytest.raises(OSError) as ei:
            lay.read(0, N_ROWS)
    assert ei.value.errno == errno.EIO and ei.value.filename == h5 and "'contig'" in str(ei.value)
    np.testing.assert_array_equal(lay.read(0, N_ROWS), truth)


def test_fetcher_open_failure_is_retried(h5):
    """Out of memory opening the fetcher: OutOfMemoryError, and the next
    read() opens one."""
    lay = _core.Layout(h5, "chunked")
    with faults("enomem@1"):
        with pytest.raises(MemoryError) as ei:
            lay.read(0, 10)
    assert isinstance(ei.value, OSError) and ei.value.errno == errno.ENOMEM
    with h5py.File(h5) as f:
        np.testing.assert_array_equal(lay.read(0, 10), f["chunked"][:10])


def test_descriptors_freed_with_layout(h5):
    fds = rf.open_fds()
    for _ in range(20):
        lay = _core.Layout(h5, "chunked")
        lay.read(0, 100)
        lay.read(500, 600)
        del lay
    assert rf.open_fds() == fds


def test_fork_child_reads_with_its_own_fetcher(h5):
    lay = _core.Layout(h5, "gz")
    with h5py.File(h5) as f:
        truth = f["gz"][()]
    np.testing.assert_array_equal(lay.read(0, 100), truth[:100])  # the parent's fetcher exists
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = np.array_equal(lay.read(100, 400), truth[100:400]) and np.array_equal(lay.read(0, 5), truth[:5])
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(lay.read(0, N_ROWS), truth)  # the parent's is untouched
