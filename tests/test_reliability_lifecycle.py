"""Lifecycle and concurrency: close() while workers read, while a consumer
waits, while guards are held; guards dropped without release; views kept
after release; several consumer threads, several queues, h5py on the same
file at the same time. Every wait is bounded (thread joins with a timeout).
No test here asserts how fast anything is: the only timings are
bounded-return checks with a generous bound (BOUND, 10 s, on joins of a
close() or a woken get()) and one wait that must not end early (a get()
whose only slot is held is still blocked after 0.3 s). Across the suite the
other timings are the same kinds of check, plus one counter-unit check
(test_streamer_api.py::test_wait_seconds_counts_a_blocked_get) and one
no-busy-wait CPU check
(test_reader_parallel.py::test_waiter_sleeps_once_no_part_is_left);
docs/design.md, "Tests and timings", lists them all."""

import gc
import threading

import h5py
import numpy as np
import pytest

import multiload
import reliability_files as rf
from reliability_files import BLOCK, IO_MODES, N, faults

pytestmark = pytest.mark.timeout(60)

#: How long a close() or a woken get() may take before the test calls it a
#: hang (a bound on the join, not a timing assertion).
BOUND = 10


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return rf.write_data_file(str(tmp_path_factory.mktemp("lifecycle") / "data.h5"))


def in_thread(fn, *args):
    """Start fn(*args) in a daemon thread; returns (thread, result dict)."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def finished(t):
    t.join(BOUND)
    return not t.is_alive()


def is_valid_stale_block(view):
    """A view whose slot was reused still holds some block of the dataset
    (never freed or foreign memory): rows of consecutive values."""
    flat = np.asarray(view).reshape(-1)
    return bool(np.all(np.diff(flat) == 1)) and flat[0] % rf.COLS == 0


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_close_while_workers_mid_read(data_file, io_mode):
    with faults("slow~1:300"):
        q = multiload.Streamer(data_file).get_queue("gz", n_procs=2, block_size=BLOCK, io_mode=io_mode)
        t, out = in_thread(q.get, rf.GET_TIMEOUT)  # a consumer waiting too
        threading.Event().wait(0.1)  # workers are inside their first (slow) read
        c, _ = in_thread(q.close)
        assert finished(c), "close() did not return"
        assert finished(t)
        assert "error" not in out
        assert out["value"] is multiload.QueueClosed or out["value"].rows == BLOCK
        assert q.get(timeout=rf.GET_TIMEOUT) is multiload.QueueClosed


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_close_while_consumer_waits(data_file, io_mode):
    """read_ahead=1 and this thread holds the only slot: another thread's
    get() really blocks; close() wakes it with QueueClosed."""
    q = multiload.Streamer(data_file).get_queue("contig", n_procs=2, read_ahead=1, block_size=BLOCK,
                                                io_mode=io_mode)
    g = q.get(timeout=rf.GET_TIMEOUT)
    t, out = in_thread(q.get, None)
    t.join(0.3)
    assert t.is_alive(), "get() should block while the only slot is held"
    c, _ = in_thread(q.close)
    assert finished(c) and finished(t)
    assert out.get("value") is multiload.QueueClosed, out
    with g as block:  # the held block is still intact after close
        assert np.array_equal(block, rf.values()[:BLOCK])
    assert q.get() is multiload.QueueClosed


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_close_while_guards_held(data_file, io_mode):
    q = multiload.Streamer(data_file).get_queue("gz", n_procs=2, read_ahead=4, block_size=BLOCK, ordered=True,
                                                io_mode=io_mode)
    guards = [q.get(timeout=rf.GET_TIMEOUT) for _ in range(3)]
    views = [g.array for g in guards]
    c, _ = in_thread(q.close)
    assert finished(c)
    assert q.get(timeout=rf.GET_TIMEOUT) is multiload.QueueClosed
    for k, v in enumerate(views):
        assert np.array_equal(v, rf.values()[k * BLOCK:(k + 1) * BLOCK])
    for g in guards:
        g.release()
        g.release()  # idempotent
    del q
    gc.collect()
    for k, v in enumerate(views):  # memory outlives queue and guards
        assert np.array_equal(v, rf.values()[k * BLOCK:(k + 1) * BLOCK])


def test_close_is_idempotent_and_streamer_close_closes_all(data_file):
    s = multiload.Streamer(data_file)
    qs = [s.get_queue(p, n_procs=1, read_ahead=1, block_size=BLOCK) for p in ("contig", "gz", "f32")]
    threads = [in_thread(q.get, None) for q in qs]
    with s:
        pass  # __exit__ closes every queue
    for q, (t, out) in zip(qs, threads):
        assert finished(t)
        q.close()
        q.close()
        assert q.closed and q.get() is multiload.QueueClosed


def test_guards_dropped_without_release_free_their_slot(data_file):
    """With one slot, every block after the first needs the previous guard's
    slot back: dropping the guard (and its views) must return it."""
    q = multiload.Streamer(data_file).get_queue("contig", n_procs=1, read_ahead=1, block_size=BLOCK, ordered=True)
    with q:
        for k in range(N // BLOCK):
            g = q.get(timeout=rf.GET_TIMEOUT)
            view = g.array
            assert np.array_equal(view, rf.values()[k * BLOCK:(k + 1) * BLOCK])
            del g, view  # no release, no with-block
        assert q.get(timeout=rf.GET_TIMEOUT) is multiload.QueueClosed


def test_guard_in_reference_cycle_freed_by_gc(data_file):
    q = multiload.Streamer(data_file).get_queue("contig", n_procs=1, read_ahead=1, block_size=BLOCK, ordered=True)
    with q:
        g = q.get(timeout=rf.GET_TIMEOUT)
        cycle = [g.array]
        cycle.append(cycle)
        del g, cycle
        gc.collect()
        g2 = q.get(timeout=rf.GET_TIMEOUT)
        with g2 as block:
            assert np.array_equal(block, rf.values()[BLOCK:2 * BLOCK])


def test_all_slots_held_by_this_thread_is_an_error_not_a_hang(data_file):
    q = multiload.Streamer(data_file).get_queue("contig", n_procs=1, read_ahead=2, block_size=BLOCK)
    with q:
        held = [q.get(timeout=rf.GET_TIMEOUT) for _ in range(2)]
        with pytest.raises(RuntimeError, match="every one of the queue's 2 slots is held"):
            q.get(timeout=rf.GET_TIMEOUT)
        held[0].release()
        assert q.get(timeout=rf.GET_TIMEOUT).rows == BLOCK


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_views_after_release_never_crash(data_file, io_mode):
    """Views kept after release see reused slots (stale data, always some
    real block once the workers are stopped), and outlive the queue, the
    Streamer and a gc. While the queue runs, a worker may be writing a new
    block into a kept view's slot, so the views are checked after close."""
    q = multiload.Streamer(data_file).get_queue("gz", n_procs=2, read_ahead=2, block_size=BLOCK, cyclic=True,
                                                io_mode=io_mode)
    kept = []
    for _ in range(60):
        with q.get(timeout=rf.GET_TIMEOUT) as block:
            kept.append(block)
            kept.append(block[3:7, 1:])
    q.close()
    assert all(is_valid_stale_block(v) for v in kept[::2])
    total = sum(int(v.sum()) for v in kept)
    del q
    gc.collect()
    assert sum(int(v.sum()) for v in kept) == total  # nothing writes the slots any more
    assert all(v.shape == (BLOCK, rf.COLS) for v in kept[::2])


@pytest.mark.parametrize("ordered", [False, True])
def test_several_consumer_threads_on_one_queue(data_file, ordered):
    q = multiload.Streamer(data_file).get_queue("gz", n_procs=3, block_size=BLOCK, ordered=ordered)
    seen, lock = {}, threading.Lock()

    def consume():
        while True:
            g = q.get(timeout=rf.GET_TIMEOUT)
            if g is multiload.QueueClosed:
                return
            with g as block:
                copy = np.array(block)
            with lock:
                assert g.index not in seen
                seen[g.index] = (g.start, copy)

    threads = [in_thread(consume) for _ in range(4)]
    for t, out in threads:
        assert finished(t)
        assert "error" not in out, out
    q.close()
    assert sorted(seen) == list(range(N // BLOCK))
    rf.check_blocks(seen, rf.values())


def test_several_queues_on_one_file_with_h5py_reading_too(data_file):
    """Four queues on one file in four threads while h5py holds the same
    file open read-only and reads it: read-only opens do not conflict."""
    paths = ["contig", "gz", "f32", "gzf32"]
    with h5py.File(data_file, "r") as f:
        s = multiload.Streamer(data_file)
        queues = [s.get_queue(p, n_procs=2, block_size=BLOCK) for p in paths]

        def drain(q):
            with q:
                return rf.drain(q)

        threads = [in_thread(drain, q) for q in queues]
        for _ in range(5):
            for p in paths:
                assert np.array_equal(f[p][...], rf.values())
        for (t, out), p in zip(threads, paths):
            assert finished(t)
            blocks, errors = out["value"]
            assert errors == [] and len(blocks) == N // BLOCK, p
            rf.check_blocks(blocks, rf.values())


def test_h5py_writer_lock_is_reported(data_file, tmp_path):
    """A file held open for writing by h5py is locked (HDF5 file locking):
    multiload says so, naming HDF5_USE_FILE_LOCKING; with locking off (in a
    subprocess, as on a network file system) it opens."""
    import shutil
    fn = str(tmp_path / "w.h5")
    shutil.copy(data_file, fn)
    with h5py.File(fn, "a"):
        with pytest.raises(BlockingIOError, match="locked by a process writing it.*HDF5_USE_FILE_LOCKING"):
            multiload.Streamer(fn).get_queue("contig")
    code = f"""
import h5py, multiload, numpy as np
with h5py.File({fn!r}, "a"):
    q = multiload.Streamer({fn!r}).get_queue("contig", block_size={BLOCK}, ordered=True)
    with q.get(timeout=20) as b:
        assert np.array_equal(b, np.arange({BLOCK * rf.COLS}, dtype="<i4").reshape({BLOCK}, {rf.COLS}))
    q.close()
print("ok")
"""
    r = rf.run_python(code, env={"HDF5_USE_FILE_LOCKING": "FALSE"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_queue_dropped_without_close_stops_its_workers(data_file):
    before = rf.n_threads()
    q = multiload.Streamer(data_file).get_queue("contig", n_procs=3, read_ahead=3, block_size=BLOCK)
    with q.get(timeout=rf.GET_TIMEOUT):
        pass
    del q
    gc.collect()
    assert rf.n_threads() == before
