"""The Reader's parallel paths: a request cut into parts that several
threads run (chunk bands decoded on every worker, contiguous row lists and
ranges split), a waiter running its own request, and the fast planning of
common expressions. Results are compared with h5py on the same data."""

import errno
import shutil
import threading
import time

import h5py
import numpy as np
import pytest

import multiload
from multiload import _core

import reliability_files as rf

pytestmark = pytest.mark.timeout(120)

ROWS, COLS, CHUNK = 6000, 16, 64


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("par") / "par.h5")
    rng = np.random.default_rng(3)
    data = rng.random((ROWS, COLS)).astype("<f4")
    cube = rng.integers(0, 1000, (ROWS // 10, 12, 10)).astype("<i4")
    tab = np.zeros(ROWS, dtype=[("a", "<i4"), ("v", "<f8", (3,)), ("x", "<f4")])
    tab["a"] = np.arange(ROWS)
    tab["v"] = rng.random((ROWS, 3))
    tab["x"] = rng.random(ROWS)
    with h5py.File(path, "w") as f:
        f.create_dataset("contig", data=data)
        f.create_dataset("gz", data=data, chunks=(CHUNK, COLS), compression="gzip", shuffle=True)
        f.create_dataset("gz32", data=data, chunks=(CHUNK, COLS), compression="gzip", fletcher32=True)
        f.create_dataset("plain", data=data, chunks=(CHUNK, COLS))
        # chunks that do not span whole rows: a band is several chunks
        f.create_dataset("cube", data=cube, chunks=(7, 5, 4), compression="gzip")
        f.create_dataset("tab", data=tab, chunks=(CHUNK,), compression="gzip")
    return path, data, cube, tab


@pytest.fixture(params=[None, "pread"])
def io_mode(request):
    return request.param


def _batches(n, rng):
    yield rng.integers(0, n, 300)                       # unsorted, duplicates
    yield np.sort(rng.choice(n, 300, replace=False))    # increasing
    yield np.sort(rng.integers(0, n, 300))              # sorted with duplicates
    yield rng.integers(-n, n, 257)                      # negative rows count from the end
    yield np.arange(n)[::-3]                            # decreasing
    yield np.full(100, n - 1)                           # one row many times


@pytest.mark.parametrize("path", ["contig", "gz", "gz32", "plain"])
@pytest.mark.parametrize("cache", [0, 1])
def test_parts_match_h5py(h5, path, io_mode, cache):
    """Every kind of row list and range, cut into parts, equals numpy on
    the data; cache=1 (one byte) keeps every band out of the cache."""
    fn, data = h5[0], h5[1]
    rng = np.random.default_rng(11)
    with multiload.Reader(fn, n_procs=3, io_mode=io_mode, cache_bytes=cache) as r:
        ds = r.get_dataset("/" + path)
        stage = ds.create_stage(ROWS)
        for rows in _batches(ROWS, rng):
            np.testing.assert_array_equal(r.request(ds[rows], stage).get(), data[rows])
            np.testing.assert_array_equal(r.request(ds[list(rows)], stage).get(), data[list(rows)])
        for sl in (slice(None), slice(5, ROWS - 7), slice(CHUNK, 40 * CHUNK), slice(3, 4000, 2)):
            np.testing.assert_array_equal(r.request(ds[sl], stage).get(), data[sl])
        np.testing.assert_array_equal(r.read(ds[-1]), data[-1])
        assert r.stats()["parallel"] > 0


def test_parts_of_multichunk_bands_and_columns(h5, io_mode):
    fn, _, cube, tab = h5
    rng = np.random.default_rng(5)
    with multiload.Reader(fn, n_procs=2, io_mode=io_mode) as r:
        c = r.get_dataset("/cube")
        rows = rng.integers(0, len(cube), 200)
        np.testing.assert_array_equal(r.read(c[rows]), cube[rows])
        np.testing.assert_array_equal(r.read(c[np.sort(rows), 3:, ::2]), cube[np.sort(rows), 3:, ::2])
        np.testing.assert_array_equal(r.read(c[2:len(cube) - 3]), cube[2:len(cube) - 3])
        t = r.get_dataset("/tab")
        rows = rng.integers(0, ROWS, 500)
        np.testing.assert_array_equal(r.read(t.read_coordinates(rows, field="v")), tab["v"][rows])
        np.testing.assert_array_equal(r.read(t["x"][100:5000]), tab["x"][100:5000])
        np.testing.assert_array_equal(r.read(t[rows]), tab[rows])


def test_fast_plan_errors_match_numpy(h5):
    fn, data = h5[0], h5[1]
    with multiload.Reader(fn, n_procs=2) as r:
        ds = r.get_dataset("/contig")
        stage = ds.create_stage(10)
        for bad in ([0, ROWS], np.array([ROWS + 5]), np.array([-ROWS - 1]), ROWS, -ROWS - 1):
            with pytest.raises(IndexError):
                r.request(ds[bad], stage)
            with pytest.raises(IndexError):
                data[bad]
        # the stage is free after each refusal
        np.testing.assert_array_equal(r.request(ds[[-1, 0, -1]], stage).get(), data[[-1, 0, -1]])
        # bool lists are masks, not rows
        mask = [True, False] * (ROWS // 2)
        with pytest.raises(multiload.SharedMemoryError):
            r.request(ds[mask], stage)
        np.testing.assert_array_equal(r.read(ds[mask]), data[mask])
        np.testing.assert_array_equal(r.read(ds[np.array([], dtype=np.int64)]), data[[]])
        np.testing.assert_array_equal(r.read(ds[[]]), data[[]])


def _damage_chunk(fn, path, chunk):
    off, size = rf.chunk_span(fn, path, chunk)
    rf.xor_bytes(fn, off + size // 2, 4)
    return off


@pytest.mark.parametrize("path,what", [("gz", "cannot decode"), ("gz32", "fletcher32 checksum mismatch")])
def test_damaged_chunk_in_parallel_request(h5, tmp_path, io_mode, path, what):
    """A damaged chunk among many decoded in parallel: the request fails,
    naming file, dataset, chunk and rows; other requests are exact."""
    fn = str(tmp_path / "damaged.h5")
    shutil.copy(h5[0], fn)
    bad = 37
    _damage_chunk(fn, path, bad)
    data = h5[1]
    with multiload.Reader(fn, n_procs=2, io_mode=io_mode) as r:
        ds = r.get_dataset("/" + path)
        stage = ds.create_stage(ROWS)
        rows = np.arange(0, ROWS, 5)[::-1]  # touches every chunk, unsorted
        for key in (ds[rows], ds[:], ds[bad * CHUNK + 3:bad * CHUNK + 4]):
            with pytest.raises(OSError) as ei:
                r.request(key, stage).get()
            e = ei.value
            assert isinstance(e, multiload.SubprocessException)
            assert e.errno == errno.EIO
            msg = str(e)
            assert what in msg and f"chunk {bad} " in msg and f"'/{path}'" in msg and fn in msg, msg
            assert f"rows {bad * CHUNK}..{(bad + 1) * CHUNK}" in msg, msg
        good = rows[(rows // CHUNK) != bad]
        np.testing.assert_array_equal(r.request(ds[good], stage).get(), data[good])
        assert r.stats()["parallel"] > 0


def test_waiter_runs_its_request(h5):
    """Synchronous use: the thread in get() runs the request itself (inline
    reads off, or they would serve these one-row requests in request())."""
    fn, data = h5[0], h5[1]
    with multiload.Reader(fn, n_procs=2, inline_reads=False) as r:
        ds = r.get_dataset("/contig")
        stage = ds.create_stage(1)
        for i in range(300):
            np.testing.assert_array_equal(r.request(ds[i], stage).get(), data[i])
        st = r.stats()
        assert st["requests"] == 300 and st["helped"] > 0


def test_many_threads_share_parts(h5, io_mode):
    """Threads submitting and waiting at once, every request in parts."""
    fn, data = h5[0], h5[1]
    errors = []
    with multiload.Reader(fn, n_procs=2, io_mode=io_mode, cache_bytes=1 << 20) as r:
        ds = r.get_dataset("/gz")

        def run(seed):
            try:
                rng = np.random.default_rng(seed)
                pool = ds.create_stage_pool(400, 3)
                for _ in range(15):
                    futs = [(rows, r.request(ds[rows], pool)) for rows in
                            (rng.integers(0, ROWS, 400) for _ in range(3))]
                    for rows, f in futs:
                        np.testing.assert_array_equal(f.get(), data[rows])
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=run, args=(s,)) for s in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(100)
        assert not any(t.is_alive() for t in ts)
    assert not errors, errors


@pytest.fixture
def slow_reads(monkeypatch):
    monkeypatch.setenv("MULTILOAD_FAULTS", "slow~1:20")  # every read takes 20 ms longer
    _core.fault_reload()
    yield
    monkeypatch.delenv("MULTILOAD_FAULTS")
    _core.fault_reload()


def test_cancel_and_stop_while_parts_run(h5, slow_reads):
    """cancel() of a request whose parts are running returns False; stop()
    with parts in flight neither hangs nor crashes: the running request
    fails with QueueClosedException at once (its parts not started are
    skipped), and every future ends (cancelled, or QueueClosedException)."""
    fn, data = h5[0], h5[1]
    r = multiload.Reader(fn, n_procs=2, cache_bytes=1)
    ds = r.get_dataset("/gz")
    rows = np.arange(0, ROWS, 7)[::-1]
    futs = [r.request(ds[rows], ds.create_stage(len(rows))) for _ in range(4)]
    for _ in range(500):
        if futs[0].running():
            break
        time.sleep(0.005)
    assert futs[0].running()
    assert futs[0].cancel() is False
    cancelled = [f for f in futs[1:] if f.cancel()]
    t0 = time.monotonic()
    r.stop()
    assert time.monotonic() - t0 < 30
    with pytest.raises(multiload.QueueClosedException):
        futs[0].get()
    for f in futs[1:]:
        if f in cancelled:
            assert f.cancelled()
            continue
        try:
            np.testing.assert_array_equal(f.get(), data[rows])
        except multiload.QueueClosedException:
            pass
    assert r._core.join(10), "a worker is still reading 10 s after stop()"


def test_close_and_drop_with_parts_in_flight(h5, slow_reads):
    fn = h5[0]
    for wait in (False, True):
        r = multiload.Reader(fn, n_procs=2, cache_bytes=1)
        ds = r.get_dataset("/gz")
        futs = [r.request(ds[::3], ds.create_stage(ROWS)) for _ in range(3)]
        time.sleep(0.05)
        r.close(wait=wait)
        for f in futs:
            assert f.get().shape == (ROWS // 3, COLS)
        del futs, ds, r  # dropped with nothing left: no hang, no leak of running parts


def test_drop_futures_with_parts_in_flight(h5, slow_reads):
    """A future dropped while its parts run waits for them (its stage is
    not freed under the workers), then the reader still works."""
    fn, data = h5[0], h5[1]
    with multiload.Reader(fn, n_procs=2, cache_bytes=1) as r:
        ds = r.get_dataset("/gz")
        for _ in range(3):
            f = r.request(ds[::-2], ds.create_stage(ROWS))
            time.sleep(0.01)
            del f
        np.testing.assert_array_equal(r.read(ds[5:9]), data[5:9])


def test_sorted_cuts_cover_every_row_once(h5):
    """Parts never split a band: with the cache off, each band a request
    touches is decoded exactly once (misses == distinct bands)."""
    fn = h5[0]
    rng = np.random.default_rng(9)
    with multiload.Reader(fn, n_procs=2, cache_bytes=1) as r:
        ds = r.get_dataset("/gz")
        for _ in range(10):
            rows = rng.integers(0, ROWS, 700)
            before = r.stats()["cache_misses"]
            r.read(ds[rows])
            assert r.stats()["cache_misses"] - before == len(np.unique(rows // CHUNK))


def test_small_requests_in_flight_are_batched(h5, io_mode):
    """Many one-row requests in flight: with io_uring read in shared I/O
    batches (with pread there are none: the reads would be serial), each
    result exact."""
    fn, data = h5[0], h5[1]
    with multiload.Reader(fn, n_procs=2, io_mode=io_mode, inline_reads=False) as r:
        ds = r.get_dataset("/contig")
        rows = np.random.default_rng(2).integers(0, ROWS, 2000)
        for k in range(0, len(rows), 100):
            futs = [r.request(ds[int(i)], ds.create_stage(1)) for i in rows[k:k + 100]]
            for i, f in zip(rows[k:k + 100], futs):
                np.testing.assert_array_equal(f.get(), data[i])
        if (io_mode or multiload.io_mode()) == "io_uring":
            assert r.stats()["batched"] > 0


@pytest.mark.parametrize("inline_reads", [False, True])
def test_batch_with_a_failing_request(h5, tmp_path, io_mode, inline_reads):
    """A batch of small requests where some rows lie past a cut end of
    file: those fail (naming file and rows), the rest are exact. With
    inline reads, the short read in request() hands the request to the
    workers, which report it."""
    fn = str(tmp_path / "cut.h5")
    shutil.copy(h5[0], fn)
    data = h5[1]
    with multiload.Reader(fn, n_procs=1, io_mode=io_mode, inline_reads=inline_reads) as r:
        ds = r.get_dataset("/contig")
        cut = 4000
        with open(fn, "r+b") as f:
            f.truncate(ds._layout.offset + cut * COLS * 4)
        rows = [10, 4500, 20, 5999, 3999, 30, 4000] * 10
        futs = [r.request(ds[i:i + 1], ds.create_stage(1)) for i in rows]
        for i, f in zip(rows, futs):
            if i < cut:
                np.testing.assert_array_equal(f.get(), data[i:i + 1])
            else:
                with pytest.raises(OSError) as ei:
                    f.get()
                assert fn in str(ei.value) and f"rows {i}..{i + 1}" in str(ei.value), str(ei.value)


def test_inline_reads_serve_cached_small_requests(h5, io_mode):
    """One-row and small-range requests on warm contiguous data are read
    inside request(): the future is done at once and exact. Column, list
    and chunked requests still go to the workers."""
    fn, data = h5[0], h5[1]
    with open(fn, "rb") as f:  # warm the page cache
        while f.read(1 << 20):
            pass
    with multiload.Reader(fn, n_procs=2, io_mode=io_mode) as r:
        ds = r.get_dataset("/contig")
        stage = ds.create_stage(64)
        for i in np.random.default_rng(5).integers(0, ROWS - 64, 200):
            fut = r.request(ds[int(i)], stage)
            assert fut.done()
            np.testing.assert_array_equal(fut.get(), data[i])
            np.testing.assert_array_equal(r.request(ds[int(i):int(i) + 64], stage).get(), data[i:i + 64])
        np.testing.assert_array_equal(r.request(ds[[5, 3, 5]], stage).get(), data[[5, 3, 5]])
        st = r.stats()
        assert st["inlined"] >= 390, st
        assert st["requests"] == 401 and st["rows"] == 200 * 65 + 3
        gz = r.get_dataset("/gz")
        np.testing.assert_array_equal(r.request(gz[7], gz.create_stage(1)).get(), data[7])
        assert r.stats()["inlined"] == st["inlined"]
        r.close()
        with pytest.raises(RuntimeError, match="closed"):
            r.request(ds[1], stage)


def test_waiter_sleeps_once_no_part_is_left(h5, slow_reads):
    """A waiter whose request's parts are all taken by others sleeps (no
    busy loop): its CPU time stays well under the wall time it waits."""
    fn, data = h5[0], h5[1]
    with multiload.Reader(fn, n_procs=3, cache_bytes=1) as r:
        ds = r.get_dataset("/gz")
        rows = np.arange(0, ROWS, 2)[::-1]
        fut = r.request(ds[rows], ds.create_stage(len(rows)))
        for _ in range(500):  # a worker plans it and publishes its parts
            if fut.running():
                break
            time.sleep(0.002)
        w0, c0 = time.monotonic(), time.thread_time()
        np.testing.assert_array_equal(fut.get(), data[rows])
        wall, cpu = time.monotonic() - w0, time.thread_time() - c0
        assert wall > 0.05
        assert cpu < 0.5 * wall, (cpu, wall)
