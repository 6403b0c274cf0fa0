"""Reader behaviour: stages, pools, futures, errors, shutdown, table methods
(compared with PyTables)."""

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tables

import multiload
from multiload.dataset_ops import ColOp, CoordOp, IndexOp, ReadOpArray, ReadOpTable, ReadScalarOpTable

pytestmark = pytest.mark.timeout(60)


class Row(tables.IsDescription):
    a = tables.Int32Col()
    v = tables.Float64Col(shape=(2, 3))
    x = tables.Float32Col()


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("api") / "api.h5")
    rng = np.random.default_rng(7)
    arr = np.arange(400 * 6, dtype="<i8").reshape(400, 6)
    tab = np.zeros(300, dtype=tables.dtype_from_descr(Row))
    tab["a"] = rng.integers(0, 20, 300)
    tab["v"] = rng.random((300, 2, 3))
    tab["x"] = rng.random(300).astype("f4")
    with tables.open_file(path, "w") as f:
        f.create_array("/", "arr", arr)
        t = f.create_table("/", "tab", Row)
        t.append(tab)
        t.cols.x.create_csindex()
        t.cols.a.create_index()
        filt = tables.Filters(complevel=3, complib="zlib", shuffle=True)
        tc = f.create_table("/", "ztab", Row, filters=filt, chunkshape=(16,))
        tc.append(tab)
        vl = f.create_vlarray("/", "vl", tables.Int32Atom())
        for i in range(5):
            vl.append(np.arange(i + 1, dtype="i4"))
    return path, arr, tab


@pytest.fixture
def reader(h5):
    r = multiload.Reader(h5[0], n_procs=2)
    yield r
    r.stop()


def test_op_classes_follow_multitables(reader):
    t = reader.get_dataset("/tab")
    a = reader.get_dataset("/arr")
    assert isinstance(t["a"][3:5], ReadOpTable)
    assert isinstance(t[3:5]["a"], ReadOpTable) and t[3:5]["a"]._col == "a"
    assert isinstance(t[3]["a"], ReadScalarOpTable) and t[3]["a"]._col == "a"
    assert isinstance(t[[1, 2]]["a"], CoordOp) and t[[1, 2]]["a"]._col == "a"
    assert isinstance(t.col("v")[3:5, 1], ColOp)
    assert isinstance(a[4:16:2, ...], ReadOpArray)
    assert isinstance(a[..., :3], IndexOp)
    assert multiload.dataset_ops.WhereOp and multiload.dataset_ops.SortOp


def test_stage_capacity_is_exact(reader, h5):
    a = reader.get_dataset("/arr")
    exact = multiload.reader.Stage(5 * 6 * 8)
    np.testing.assert_array_equal(reader.request(a[10:15], exact).get(), h5[1][10:15])
    small = multiload.reader.Stage(5 * 6 * 8 - 1)
    with pytest.raises(multiload.SharedMemoryError):
        reader.request(a[10:15], small)
    # a refused request leaves the stage free
    np.testing.assert_array_equal(reader.request(a[10:14], small).get(), h5[1][10:14])
    assert a.create_stage(5).size_nbytes == 5 * 6 * 8
    assert a.create_stage((5, None)).size_nbytes == 5 * 6 * 8
    assert a.create_stage((5, 2)).size_nbytes == 5 * 2 * 8
    assert reader.get_dataset("/tab").create_stage(-1).size_nbytes == h5[2].nbytes


def test_busy_stage_and_consumed_future(reader, h5):
    a = reader.get_dataset("/arr")
    stage = a.create_stage(4)
    fut = reader.request(a[0:4], stage)
    with pytest.raises(RuntimeError, match="already fielding"):
        reader.request(a[4:8], stage)
    np.testing.assert_array_equal(fut.get(), h5[1][0:4])
    with pytest.raises(RuntimeError, match="already taken"):
        fut.get()
    with reader.request(a[4:8], stage).get_proxy() as p:
        np.testing.assert_array_equal(np.asarray(p), h5[1][4:8])
        assert p.shape == (4, 6)
    with pytest.raises(RuntimeError, match="released"):
        p.shape
    seen = []
    reader.request(a[8], stage).get_direct(lambda v: seen.append(v.copy()))
    np.testing.assert_array_equal(seen[0], h5[1][8])


def test_bad_inputs(reader, h5):
    a = reader.get_dataset("/arr")
    t = reader.get_dataset("/tab")
    stage = a.create_stage(400)
    with pytest.raises(IndexError):
        a[...]
    with pytest.raises(IndexError):
        reader.request(a[400], stage)
    with pytest.raises(IndexError):
        reader.request(a[[0, 400]], stage)
    with pytest.raises(IndexError):
        reader.request(a[1.5], stage)
    with pytest.raises(IndexError):
        reader.request(a[:, [1, 2], [0, 1]], stage)
    with pytest.raises(IndexError):
        reader.request(a["a"], stage)
    for make in (lambda: t["nope"], lambda: t.col("nope"), lambda: reader.read(t[2:4]["nope"])):
        with pytest.raises(KeyError) as ei:
            make()
        assert isinstance(ei.value, NameError)
    with pytest.raises(KeyError):
        reader.get_dataset("/missing")
    # the stage was never taken by the failed requests
    np.testing.assert_array_equal(reader.request(a[:], stage).get(), h5[1])
    reader.close()
    with pytest.raises(RuntimeError, match="closed"):
        reader.request(a[0], stage)


def test_table_methods_match_pytables(reader, h5):
    path, _, tab = h5
    with tables.open_file(path) as f:
        for name in ("/tab", "/ztab"):
            pt = f.get_node(name)
            t = reader.get_dataset(name)
            cases = [
                (t.read(10, 50, 3, field="v"), pt.read(10, 50, 3, field="v")),
                (t.read(start=290), pt.read(start=290)),
                (t.col("x"), pt.col("x")),
                (t.read_coordinates([5, 1, 1, 299], field="a"), pt.read_coordinates([5, 1, 1, 299], field="a")),
                (t.where("(a > lim) & (x < 0.5)", {"lim": 7}, 20, 250, 2),
                 pt.read_where("(a > lim) & (x < 0.5)", {"lim": 7}, start=20, stop=250, step=2)),
                (t.where("x > 0.9"), pt.read_where("x > 0.9")),
            ]
            for op, expect in cases:
                got = reader.read(op)
                assert got.dtype == expect.dtype and got.shape == expect.shape
                np.testing.assert_array_equal(got, expect)
        pt = f.get_node("/tab")
        t = reader.get_dataset("/tab")
        for args in [dict(), dict(start=10, stop=100, step=3), dict(field="x", start=250)]:
            expect = pt.read_sorted("x", checkCSI=True, **args)
            np.testing.assert_array_equal(reader.read(t.read_sorted("x", checkCSI=True, **args)), expect)
        with pytest.raises(ValueError, match="full"):
            reader.read(t.read_sorted("a", checkCSI=True))


def test_where_uses_caller_variables(reader, h5):
    t = reader.get_dataset("/tab")
    lim = 15  # noqa: F841 - looked up by where() as PyTables does
    np.testing.assert_array_equal(reader.read(t.where("a >= lim")), h5[2][h5[2]["a"] >= 15])


def test_where_without_numexpr_says_what_to_install(h5):
    """numexpr is optional (numpy is the only run-time dependency): without it
    where() raises ImportError naming it; other requests on the table work."""
    code = f"""
import sys
sys.modules["numexpr"] = None  # import numexpr now raises ImportError
import multiload
r = multiload.Reader({h5[0]!r}, n_procs=1)
t = r.get_dataset("/tab")
print(r.read(t["a"][0:3]).tolist())
try:
    r.read(t.where("a > 3"))
except ImportError as e:
    print("ImportError:", e)
r.stop()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()[-2:]
    assert first == str(h5[2]["a"][0:3].tolist())
    assert second.startswith("ImportError:") and "pip install numexpr" in second


def test_vlarray_slow_path(reader):
    vl = reader.get_dataset("/vl")
    stage = vl.create_stage_natoms(5)
    np.testing.assert_array_equal(reader.request(vl[3], stage).get(), np.arange(4))
    np.testing.assert_array_equal(reader.read(vl[0:3]), [0, 0, 1, 0, 1, 2])


def test_pool_and_request_pool_under_threads(reader, h5):
    t = reader.get_dataset("/ztab")
    pool = t.create_stage_pool(3, 4)
    rp = multiload.RequestPool()
    n_threads, per = 4, 40
    errors = []

    def produce(k):
        try:
            for i in range(per):
                row = (k * per + i) % 297
                fut = reader.request(t[row:row + 3], pool)
                rp.add((row, fut))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_threads)]
    for th in threads:
        th.start()
    for _ in range(n_threads * per):
        row, fut = rp.next(timeout=30)
        np.testing.assert_array_equal(fut.get(), h5[2][row:row + 3])
    for th in threads:
        th.join()
    assert not errors


def test_futures_api(reader, h5):
    a = reader.get_dataset("/arr")
    stage = a.create_stage(10)
    fut = reader.request(a[[9, 3, 3]], stage)
    seen = threading.Event()
    fut.add_done_callback(lambda f: seen.set())
    np.testing.assert_array_equal(fut.result(timeout=10), h5[1][[9, 3, 3]])
    np.testing.assert_array_equal(fut.result(), h5[1][[9, 3, 3]])  # result() may repeat
    assert fut.done() and not fut.cancelled() and fut.exception() is None
    assert seen.wait(5)
    # a finished future cannot be cancelled; the stage is free again
    assert not fut.cancel()
    f2 = reader.request(a[0:10], stage)
    f2.result()

    async def main():
        s2 = a.create_stage(10)
        return await reader.request(a[20:30], s2)

    np.testing.assert_array_equal(asyncio.run(main()), h5[1][20:30])


def test_cancel_queued_request_frees_stage(h5, monkeypatch):
    from multiload import _core

    r = multiload.Reader(h5[0], n_procs=1)
    try:
        a = r.get_dataset("/arr")
        stages = [a.create_stage(400) for _ in range(30)]
        monkeypatch.setenv("MULTILOAD_FAULTS", "slow@1:300")
        _core.fault_reload()
        try:
            futs = [r.request(a[:], s) for s in stages]
            for _ in range(500):  # until the worker has taken the first (it then sleeps in its read)
                if futs[0].running():
                    break
                threading.Event().wait(0.01)
            assert futs[0].running()
            cancelled = [f for f in futs if f.cancel()]
        finally:
            monkeypatch.delenv("MULTILOAD_FAULTS")
            _core.fault_reload()
        assert 0 < len(cancelled) < len(futs)  # the first was running: not cancellable
        assert not futs[0].cancelled()
        for f in futs:
            if f in cancelled:
                assert f.cancelled() and f.done()
                with pytest.raises(concurrent.futures.CancelledError):
                    f.result()
            else:
                np.testing.assert_array_equal(f.get(), h5[1])
        # every stage is free again
        for s in stages:
            r.request(a[0:2], s).get()
    finally:
        r.stop()


def test_stop_fails_queued_requests_and_notify(h5, monkeypatch):
    from multiload import _core

    events = []
    r = multiload.Reader(h5[0], n_procs=1, notify=events.append)
    a = r.get_dataset("/arr")
    monkeypatch.setenv("MULTILOAD_FAULTS", "slow@1:300")  # the first read stalls: the rest stay queued
    _core.fault_reload()
    try:
        futs = [r.request(a[:], a.create_stage(400)) for _ in range(20)]
        r.stop()
    finally:
        monkeypatch.delenv("MULTILOAD_FAULTS")
        _core.fault_reload()
    outcomes = set()
    for f in futs:
        try:
            np.testing.assert_array_equal(f.get(), h5[1])
            outcomes.add("ok")
        except multiload.QueueClosedException as e:
            assert isinstance(e, multiload.SubprocessException)
            outcomes.add("closed")
    assert "closed" in outcomes
    r._dispatcher.join(10)
    assert events[-1] is multiload.QueueClosed
    assert all(isinstance(e, multiload.reader.Request) for e in events[:-1])


@pytest.mark.parametrize("inline_reads", [True, False])
def test_notify_sees_every_request_once(h5, inline_reads):
    """Requests read inline finish inside request(), before their future
    is registered with the notification thread: none may be lost."""
    events = []
    lock = threading.Lock()

    def note(e):
        with lock:
            events.append(e)

    r = multiload.Reader(h5[0], n_procs=2, notify=note, inline_reads=inline_reads)
    a = r.get_dataset("/arr")
    futs = [r.request(a[i % len(h5[1])], a.create_stage(1)) for i in range(500)]
    for i, f in enumerate(futs):
        np.testing.assert_array_equal(f.get(), h5[1][i % len(h5[1])])
    r.close(wait=True)
    r._dispatcher.join(10)
    assert events[-1] is multiload.QueueClosed
    assert len(events) == 501 and {id(e) for e in events[:-1]} == {id(f) for f in futs}


def test_background_error_keeps_its_type(tmp_path, h5):
    import shutil

    path = str(tmp_path / "trunc.h5")
    shutil.copy(h5[0], path)
    r = multiload.Reader(path, n_procs=1)
    try:
        a = r.get_dataset("/arr")
        with open(path, "r+b") as f:
            f.truncate(a._layout.offset + 100)
        fut = r.request(a[50:60], a.create_stage(10))
        with pytest.raises(OSError) as ei:
            fut.get()
        assert isinstance(ei.value, multiload.SubprocessException)
    finally:
        r.stop()


def test_context_manager_and_close_wait(h5):
    with multiload.Reader(h5[0], n_procs=2) as r:
        a = r.get_dataset("/arr")
        fut = r.request(a[::7], a.create_stage(100))
    np.testing.assert_array_equal(fut.get(), h5[1][::7])
