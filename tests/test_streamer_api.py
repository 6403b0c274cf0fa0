"""Streamer and Queue API semantics (issue 3, "The Python API")."""

import gc
import os
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest

import multiload
from h5files import GET_TIMEOUT, N, assert_same, drain

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def seq(api_file):
    with h5py.File(api_file, "r") as f:
        return f["seq"][:]


@pytest.fixture(scope="module")
def seq2d(api_file):
    with h5py.File(api_file, "r") as f:
        return f["seq2d"][:]


@pytest.fixture(scope="module")
def table(api_file):
    with h5py.File(api_file, "r") as f:
        return f["table"][:]


# ------------------------------------------------------------ QueueClosed

def test_queue_closed_is_returned_not_raised_and_again(api_file):
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=2, block_size=300)
    assert len(drain(q)) == 3
    for _ in range(3):
        assert q.get() is multiload.QueueClosed
        assert q.get(timeout=0) is multiload.QueueClosed
    q.close()
    assert q.get() is multiload.QueueClosed


def test_get_after_close_returns_queue_closed(api_file):
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=2, block_size=10)
    g = q.get(timeout=GET_TIMEOUT)
    assert g is not multiload.QueueClosed
    g.release()
    q.close()
    assert q.closed
    assert q.get() is multiload.QueueClosed
    assert q.get() is multiload.QueueClosed


def test_queue_closed_singleton():
    assert multiload.QueueClosedType() is multiload.QueueClosed
    assert not multiload.QueueClosed
    import copy
    import pickle
    assert copy.copy(multiload.QueueClosed) is multiload.QueueClosed
    assert pickle.loads(pickle.dumps(multiload.QueueClosed)) is multiload.QueueClosed


# ------------------------------------------------------------ iteration

def _collect(guards):
    out = {}
    for g in guards:
        with g as block:
            out[g.index] = (g.start, block.copy())
    return out


def test_queue_iter_and_plain_iteration(api_file, seq):
    s = multiload.Streamer(api_file)
    for make_iter in (lambda q: q.iter(), iter):
        q = s.get_queue("seq", n_procs=2, block_size=128, remainder=True)
        got = _collect(make_iter(q))
        assert sorted(got) == list(range(q.n_blocks))
        for k, (start, block) in got.items():
            assert start == k * 128
            assert_same(block, seq[start:start + 128])
        assert q.get() is multiload.QueueClosed


def test_queue_is_an_iterator(api_file, seq):
    """next(queue) gives guards, then StopIteration (and keeps giving it)."""
    s = multiload.Streamer(api_file)
    with s.get_queue("seq", n_procs=2, block_size=100, ordered=True) as q:
        assert iter(q) is q
        for k in range(q.n_blocks):
            with next(q) as block:
                assert_same(block, seq[k * 100:(k + 1) * 100])
        for _ in range(2):
            with pytest.raises(StopIteration):
                next(q)
        assert next(q, None) is None


def test_queue_is_a_context_manager(api_file, seq):
    s = multiload.Streamer(api_file)
    with s.get_queue("seq", block_size=100, ordered=True) as q:
        g = q.get(timeout=GET_TIMEOUT)
        with g as block:
            assert_same(block, seq[:100])
    assert q.closed
    assert q.get() is multiload.QueueClosed


def test_streamer_is_a_context_manager_and_closes_its_queues(api_file):
    with multiload.Streamer(api_file) as s:
        q1 = s.get_queue("seq", block_size=10, cyclic=True)
        q2 = s.get_queue("seq2d", block_size=10)
        assert q1.get(timeout=GET_TIMEOUT) is not multiload.QueueClosed
    assert q1.closed and q2.closed
    assert q1.get() is multiload.QueueClosed
    assert q2.get() is multiload.QueueClosed


def test_streamer_itself_is_not_iterable(api_file):
    with pytest.raises(TypeError, match="get_queue"):
        iter(multiload.Streamer(api_file))


def test_close_is_idempotent(api_file):
    s = multiload.Streamer(api_file)
    q = s.get_queue("seq", block_size=10, cyclic=True, n_procs=4)
    q.close()
    q.close()
    s.close()
    s.close()
    assert q.get() is multiload.QueueClosed
    with q:  # entering and leaving a closed queue closes it once more
        pass
    assert q.closed


def test_close_from_another_thread_wakes_a_blocked_get(api_file):
    """get() waits for a block no worker can load (all slots held by a
    second thread); close() must end that wait with QueueClosed."""
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=1, read_ahead=1, block_size=10)
    held = []
    taken, done = threading.Event(), threading.Event()

    def holder():
        held.append(q.get(timeout=GET_TIMEOUT))
        taken.set()
        done.wait(GET_TIMEOUT)
        held[0].release()

    t = threading.Thread(target=holder)
    t.start()
    assert taken.wait(GET_TIMEOUT)
    result = []
    waiter = threading.Thread(target=lambda: result.append(q.get()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not result, "get() must wait while another thread holds the slot"
    q.close()
    waiter.join(GET_TIMEOUT)
    assert not waiter.is_alive(), "close() did not wake a blocked get()"
    assert result == [multiload.QueueClosed]
    done.set()
    t.join(GET_TIMEOUT)


def test_guard_left_by_a_finished_thread_is_not_a_deadlock(api_file, seq):
    """A guard taken by a thread that has ended pins its slot; a new thread
    (which may reuse the old thread's ident) waiting in get() is not the
    owner: it must time out, not be told it holds every slot."""
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=1, read_ahead=1, block_size=10,
                                               ordered=True)
    held = []
    for _ in range(20):  # thread idents are often reused at once: try a few
        t = threading.Thread(target=lambda: held.append(q.get(timeout=GET_TIMEOUT)))
        t.start()
        t.join(GET_TIMEOUT)
        result = []

        def waiter():
            try:
                result.append(q.get(timeout=0.01))
            except Exception as e:
                result.append(e)

        w = threading.Thread(target=waiter)
        w.start()
        w.join(GET_TIMEOUT)
        assert len(result) == 1 and isinstance(result[0], TimeoutError), result
        g = held.pop()
        with g as block:
            assert_same(block, seq[g.start:g.start + 10])
    q.close()


# ------------------------------------------------------------ block sizes

def test_block_size_larger_than_dataset_shrinks(api_file, seq):
    s = multiload.Streamer(api_file)
    q = s.get_queue("seq", block_size=10 * N, ordered=True)
    assert q.block_size == N
    assert q.n_blocks == 1
    blocks = drain(q)
    assert len(blocks) == 1
    assert_same(blocks[0][3], seq)
    assert s.get_remainder("seq", 10 * N).shape == (0,)
    q = s.get_queue("seq", block_size=10 * N, cyclic=True, ordered=True)
    assert q.block_size == N
    with q.get(timeout=GET_TIMEOUT) as block:
        assert_same(block, seq)
    q.close()


def test_default_block_size_is_whole_chunks(api_file):
    s = multiload.Streamer(api_file)
    with h5py.File(api_file, "r") as f:
        ds = f["bigchunked"]
        chunk_rows, n = ds.chunks[0], ds.shape[0]
        expected = ds[:]
    q = s.get_queue("bigchunked", n_procs=2, ordered=True, remainder=True)
    assert q.block_size % chunk_rows == 0
    assert 0 < q.block_size < n
    blocks = drain(q)
    assert_same(np.concatenate([b[3] for b in blocks]), expected)


def test_default_block_size_contiguous(api_file):
    s = multiload.Streamer(api_file)
    with h5py.File(api_file, "r") as f:
        expected = f["bigcontig"][:]
    q = s.get_queue("bigcontig", n_procs=2, ordered=True, remainder=True)
    assert 1 <= q.block_size < expected.shape[0]
    assert_same(np.concatenate([b[3] for b in drain(q)]), expected)
    rest = s.get_remainder("bigcontig", None)
    assert_same(rest, expected[expected.shape[0] - expected.shape[0] % q.block_size:])


@pytest.mark.parametrize("remainder", [False, True])
@pytest.mark.parametrize("block", [1, 7, 100, 999, 1000])
def test_n_blocks(api_file, block, remainder):
    s = multiload.Streamer(api_file)
    q = s.get_queue("seq", block_size=block, remainder=remainder, n_procs=2)
    want = N // block + (1 if remainder and N % block else 0)
    assert q.n_blocks == want
    assert len(drain(q)) == want
    q = s.get_queue("seq", block_size=block, remainder=remainder, cyclic=True, n_procs=1)
    assert q.n_blocks is None
    q.close()


def test_generator_remainder_false_leaves_the_tail_out(api_file, seq):
    s = multiload.Streamer(api_file)
    rows = list(s.get_generator("seq", block_size=64, remainder=False, ordered=True))
    np.testing.assert_array_equal(np.array(rows), seq[:N // 64 * 64])
    rows = list(s.get_generator("seq", block_size=64, ordered=True))  # default: remainder=True
    np.testing.assert_array_equal(np.array(rows), seq)


def test_queue_attributes(api_file, table):
    s = multiload.Streamer(api_file)
    q = s.get_queue("table", block_size=64, ordered=True)
    assert q.dtype == table.dtype and q.shape == table.shape
    assert q.ordered and not q.cyclic and q.field is None
    assert "block_size=64" in repr(q)
    q.close()
    assert "closed" in repr(q)
    q = s.get_queue("table", block_size=64, field="a", cyclic=True)
    assert q.dtype == table.dtype["a"] and q.cyclic and q.field == "a"
    q.close()


@pytest.mark.parametrize("ordered", [True, False])
def test_one_row_blocks_many_workers_few_slots(api_file, seq, ordered):
    """A bounded stress of the ring: 1000 one-row blocks, 8 workers, 2 slots."""
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=8, read_ahead=2, block_size=1,
                                               ordered=ordered)
    blocks = drain(q)
    indices = [b[0] for b in blocks]
    assert (indices if ordered else sorted(indices)) == list(range(N))
    for k, start, rows, data in blocks:
        assert (start, rows) == (k, 1)
        assert_same(data, seq[k:k + 1])


# ------------------------------------------------------------ stats

def test_stats_counts_blocks_and_bytes(api_file, seq2d):
    q = multiload.Streamer(api_file).get_queue("seq2d", n_procs=2, block_size=64, remainder=True)
    st = q.stats()
    assert st["blocks"] == 0 and st["bytes"] == 0
    assert {"blocks", "bytes", "wait_seconds"} <= set(st)
    drain(q)
    st = q.stats()
    assert st["blocks"] == q.n_blocks == 16
    assert st["bytes"] == seq2d.nbytes
    assert isinstance(st["wait_seconds"], float) and st["wait_seconds"] >= 0
    assert st["io_mode"] in ("io_uring", "pread")
    q.close()
    # counters survive close
    assert q.stats()["blocks"] == 16


def test_stats_counts_only_blocks_handed_out(api_file, seq):
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=2, block_size=100, read_ahead=5)
    for _ in range(3):
        q.get(timeout=GET_TIMEOUT).release()
    st = q.stats()
    assert st["blocks"] == 3
    assert st["bytes"] == 3 * 100 * seq.itemsize
    q.close()


# ------------------------------------------------------------ threads

def test_many_consumer_threads_cover_every_block_once(api_file, seq):
    """As multitables' test_threaded: 100 threads share one queue."""
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=4, block_size=5)
    seen = []
    errors = []
    lock = threading.Lock()

    def consume():
        try:
            while True:
                g = q.get(timeout=GET_TIMEOUT)
                if g is multiload.QueueClosed:
                    return
                with g as block:
                    ok = np.array_equal(block, seq[g.start:g.start + 5]) and g.start == 5 * g.index
                with lock:
                    seen.append(g.index)
                    if not ok:
                        errors.append(g.index)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=consume) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GET_TIMEOUT * 2)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(seen) == list(range(N // 5))


def test_ordered_queue_with_threads_hands_out_every_block(api_file, seq2d):
    q = multiload.Streamer(api_file).get_queue("seq2d", n_procs=2, block_size=16, ordered=True,
                                               remainder=True)
    got = []
    lock = threading.Lock()

    def consume():
        for g in q:
            with g as block:
                data = block.copy()
            with lock:
                got.append((g.index, g.start, data))

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GET_TIMEOUT * 2)
    assert sorted(k for k, _, _ in got) == list(range(q.n_blocks))
    for k, start, data in got:
        assert_same(data, seq2d[start:start + 16])


def test_two_queues_on_one_streamer_are_independent(api_file, seq, seq2d):
    s = multiload.Streamer(api_file)
    q1 = s.get_queue("seq", n_procs=2, block_size=100, ordered=True)
    q2 = s.get_queue("seq", n_procs=2, block_size=30, ordered=True, remainder=True)
    q3 = s.get_queue("seq2d", n_procs=1, block_size=64, ordered=True)
    out = {1: [], 2: [], 3: []}
    done = set()
    while len(done) < 3:
        for i, q in ((1, q1), (2, q2), (3, q3)):
            if i in done:
                continue
            g = q.get(timeout=GET_TIMEOUT)
            if g is multiload.QueueClosed:
                done.add(i)
                continue
            with g as block:
                out[i].append(block.copy())
    assert_same(np.concatenate(out[1]), seq)
    assert_same(np.concatenate(out[2]), seq)
    assert_same(np.concatenate(out[3]), seq2d[:N // 64 * 64])
    # closing one leaves the other running
    q4 = s.get_queue("seq", n_procs=1, block_size=10, ordered=True)
    q5 = s.get_queue("seq", n_procs=1, block_size=10, ordered=True)
    q4.close()
    assert_same(np.concatenate([b[3] for b in drain(q5)]), seq)


def test_multitables_keyword_arguments_are_accepted(api_file, seq):
    s = multiload.Streamer(api_file, mode="r", title="", root_uep="/", filters=None,
                           driver=None, node_cache_slots=64)
    q = s.get_queue(path="seq", n_procs=2, read_ahead=3, cyclic=False, block_size=100,
                    ordered=True, field=None, remainder=False)
    assert_same(np.concatenate([b[3] for b in drain(q)]), seq)
    assert s.filename == os.fspath(api_file)


def test_pathlike_filename(api_file, seq):
    import pathlib
    s = multiload.Streamer(pathlib.Path(api_file))
    rows = list(s.get_generator("seq"))
    assert all(r.dtype == seq.dtype for r in rows)
    np.testing.assert_array_equal(np.array(rows), seq)


# ------------------------------------------------------------ guards

def test_guard_release_is_idempotent(api_file, seq):
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=1, read_ahead=2, block_size=100,
                                               ordered=True)
    g = q.get(timeout=GET_TIMEOUT)
    assert not g.released
    assert (g.index, g.start, g.rows) == (0, 0, 100)
    assert_same(g.array, seq[:100])
    g.release()
    g.release()
    assert g.released
    with pytest.raises(RuntimeError, match="released"):
        g.array
    with pytest.raises(RuntimeError, match="released"):
        with g:
            pass
    # the ring still works and hands out the next blocks exactly
    rest = drain(q)
    assert [b[0] for b in rest] == list(range(1, 10))
    for k, start, rows, data in rest:
        assert_same(data, seq[start:start + rows])


def test_view_after_release_does_not_crash(api_file):
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=2, read_ahead=2, block_size=100)
    g = q.get(timeout=GET_TIMEOUT)
    with g as block:
        pass
    for g2 in q:  # the slot is reused under the stale view
        g2.release()
    assert block.shape == (100,)
    total = int(block.sum())  # stale data, but readable
    assert isinstance(total, int)
    q.close()
    del q, g
    gc.collect()
    assert block[-1] == block[-1]


def test_view_stays_valid_while_guard_held_across_close(api_file, seq):
    s = multiload.Streamer(api_file)
    q = s.get_queue("seq", n_procs=2, read_ahead=3, block_size=100, ordered=True)
    g = q.get(timeout=GET_TIMEOUT)
    block = g.array
    q.close()
    s.close()
    del q, s
    gc.collect()
    assert_same(block, seq[:100])
    g.release()


def test_dropped_guard_returns_its_slot(api_file):
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=1, read_ahead=1, block_size=100)
    for _ in range(q.n_blocks):
        g = q.get(timeout=GET_TIMEOUT)
        assert g is not multiload.QueueClosed
        del g  # no release: dealloc gives the slot back
    assert q.get(timeout=GET_TIMEOUT) is multiload.QueueClosed


@pytest.mark.parametrize("ordered", [False, True])
def test_holding_every_slot_then_get_raises(api_file, ordered):
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=2, read_ahead=3, block_size=10,
                                               ordered=ordered)
    held = [q.get(timeout=GET_TIMEOUT) for _ in range(3)]
    with pytest.raises(RuntimeError, match="read_ahead"):
        q.get()
    held[0].release()
    g = q.get(timeout=GET_TIMEOUT)
    assert g is not multiload.QueueClosed
    g.release()
    for h in held:
        h.release()
    q.close()


def test_get_times_out_while_another_thread_holds_every_slot(api_file, seq):
    """No block can arrive while a second thread pins every slot: get() with
    a timeout must raise TimeoutError, and succeed once a slot is released."""
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=2, read_ahead=2, block_size=10,
                                               ordered=True)
    held = []
    ready, release = threading.Event(), threading.Event()

    def holder():
        held.extend(q.get(timeout=GET_TIMEOUT) for _ in range(2))
        ready.set()
        release.wait(GET_TIMEOUT)
        for g in held:
            g.release()

    t = threading.Thread(target=holder)
    t.start()
    assert ready.wait(GET_TIMEOUT)
    with pytest.raises(TimeoutError):
        q.get(timeout=0.2)
    release.set()
    t.join(GET_TIMEOUT)
    g = q.get(timeout=GET_TIMEOUT)
    assert g.index == 2
    with g as block:
        assert_same(block, seq[20:30])
    q.close()


def test_wait_seconds_counts_a_blocked_get(api_file):
    """wait_seconds is in seconds: a get() that timed out after 0.3 s while
    every slot was pinned by another thread waited at least 0.1 s."""
    q = multiload.Streamer(api_file).get_queue("seq", n_procs=1, read_ahead=1, block_size=10)
    held = []
    t = threading.Thread(target=lambda: held.append(q.get(timeout=GET_TIMEOUT)))
    t.start()
    t.join(GET_TIMEOUT)
    assert q.stats()["blocks"] == 1
    with pytest.raises(TimeoutError):
        q.get(timeout=0.3)
    assert 0.1 <= q.stats()["wait_seconds"] < GET_TIMEOUT
    held[0].release()
    q.close()


@pytest.fixture(scope="module")
def long_seq(tmp_path_factory):
    """512 Ki int64 rows (4 MiB): room for blocks of 2 MiB."""
    path = tmp_path_factory.mktemp("read_ahead") / "long.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("seq", data=np.arange(1 << 19, dtype="<i8"))
    return str(path)


@pytest.mark.parametrize("n_procs", [1, 4])
def test_default_read_ahead_is_two_per_worker_plus_one(long_seq, n_procs):
    # Blocks of 2 MiB or more: multitables' default, 2 * n_procs + 1 slots.
    block = multiload.streamer.READ_AHEAD_MIN_BYTES // 8
    q = multiload.Streamer(long_seq).get_queue("seq", n_procs=n_procs, block_size=block, cyclic=True)
    slots = 2 * n_procs + 1
    assert q.read_ahead == slots
    held = [q.get(timeout=GET_TIMEOUT) for _ in range(slots)]
    assert all(g is not multiload.QueueClosed for g in held)
    with pytest.raises(RuntimeError, match=f"{slots} slots"):
        q.get()
    q.close()


@pytest.mark.parametrize("block_size, slots", [(1, 64), (32768, 8), (16384, 16)])
def test_default_read_ahead_grows_for_small_blocks(long_seq, block_size, slots):
    # ~2 MiB in flight, at most 64 slots: small blocks keep the worker ahead.
    with multiload.Streamer(long_seq).get_queue("seq", n_procs=1, block_size=block_size) as q:
        assert q.read_ahead == slots
        held = [q.get(timeout=GET_TIMEOUT) for _ in range(slots)]
        assert all(g is not multiload.QueueClosed for g in held)
        with pytest.raises(RuntimeError, match=f"{slots} slots"):
            q.get()
        for g in held:
            g.release()


def test_explicit_read_ahead_is_kept(long_seq):
    with multiload.Streamer(long_seq).get_queue("seq", n_procs=2, block_size=1, read_ahead=2) as q:
        assert q.read_ahead == 2


def _tasks_and_fds():
    return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_dropped_queues_and_generators_stop_their_threads_and_files(api_file, seq2d):
    s = multiload.Streamer(api_file)
    gc.collect()
    before = _tasks_and_fds()
    for i in range(10):
        q = s.get_queue("seq2d", n_procs=4, block_size=16, cyclic=i % 2 == 0)
        q.get(timeout=GET_TIMEOUT).release()
        del q
        gen = s.get_generator("seq2d", n_procs=3, block_size=16, ordered=True)
        assert_same(next(gen), seq2d[0])
        del gen
    # a guard (and a view) that outlives its queue keeps its block intact
    q = s.get_queue("seq2d", n_procs=2, block_size=16, ordered=True)
    g = q.get(timeout=GET_TIMEOUT)
    view = g.array
    del q
    gc.collect()
    assert _tasks_and_fds() == before
    assert_same(view, seq2d[:16])
    del g, view
    gc.collect()
    assert _tasks_and_fds() == before


def test_get_timeout_must_be_non_negative(api_file):
    q = multiload.Streamer(api_file).get_queue("seq", block_size=10)
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)
    q.close()


# ------------------------------------------------------------ field=

def test_field_everywhere(api_file, table):
    s = multiload.Streamer(api_file)
    for kw in (dict(), dict(cyclic=True), dict(remainder=True)):
        q = s.get_queue("table", field="b", block_size=64, ordered=True, n_procs=2, **kw)
        assert q.dtype == table.dtype["b"]
        g = q.get(timeout=GET_TIMEOUT)
        with g as block:
            assert_same(block, table["b"][:64])
        q.close()
    # the wrapped cyclic block honours field= too
    q = s.get_queue("table", field="s", block_size=600, ordered=True, cyclic=True, n_procs=1)
    g0 = q.get(timeout=GET_TIMEOUT)
    g0.release()
    with q.get(timeout=GET_TIMEOUT) as block:
        want = table["s"][np.arange(600, 1200) % N]
        assert_same(block, want)
    q.close()
    rows = list(s.get_generator("table", field="a", block_size=64, ordered=True))
    assert rows == list(table["a"])


# ------------------------------------------------------------ I/O modes

@pytest.mark.parametrize("mode", ["pread", "io_uring", None])
def test_io_mode_argument(api_file, seq2d, mode):
    q = multiload.Streamer(api_file).get_queue("seq2d", n_procs=2, block_size=64, ordered=True,
                                               remainder=True, io_mode=mode)
    assert_same(np.concatenate([b[3] for b in drain(q)]), seq2d)
    used = q.stats()["io_mode"]
    if mode == "pread":
        assert used == "pread"
    elif mode is None:
        assert used == multiload.io_mode()
    else:  # io_uring asked for: used where the kernel allows it
        assert used in ("io_uring", "pread")


def test_bad_io_mode():
    with pytest.raises(ValueError, match="io_mode"):
        multiload.Streamer("whatever.h5").get_queue("x", io_mode="mmap")


def test_io_mode_function_follows_environment(api_file):
    assert multiload.io_mode() in ("io_uring", "pread")
    code = ("import multiload, numpy as np, h5py, sys\n"
            "q = multiload.Streamer(sys.argv[1]).get_queue('seq', block_size=100, ordered=True)\n"
            "blocks = [g.array.copy() for g in q]\n"
            "with h5py.File(sys.argv[1], 'r') as f: ok = np.array_equal(np.concatenate(blocks), f['seq'][:])\n"
            "print(multiload.io_mode(), q.stats()['io_mode'], ok)\n")
    env = dict(os.environ, MULTILOAD_IO="pread")
    out = subprocess.run([sys.executable, "-c", code, api_file], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pread", "pread", "True"]
