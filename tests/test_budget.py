"""I/O budgets (multiload.Budget, src/budget.c).

The bucket and the waiter queue are checked on a fake clock through the
_core test hook (BudgetCore(fake_clock=True): no real time, no timed
assertion): rates, bursts, oversize requests, bytes and I/Os together,
priorities, sharing, refill after idle, huge rates and None. Then budgeted
Streamer queues, Readers and FileLoaders: the data is byte-exact against
h5py (or the bytes written), the bytes the budget counts are exactly what
was read from the file (h5py's chunk sizes), and close()/stop() under a
budget that would sleep for minutes return promptly (bounded-return
checks with generous bounds).
"""
import os
import pickle
import random
import threading
import time

import h5py
import numpy as np
import pytest

import multiload
from multiload import _core

pytestmark = pytest.mark.timeout(120)

S = 10**9  # ns per second
PROMPT = 10.0  # s: the bound of every "returns promptly" check (a throttled read would take minutes)


# ---- the bucket on a fake clock --------------------------------------------

def fake(bps=0, iops=0):
    return _core.BudgetCore(bps, iops, fake_clock=True)


def test_fake_rate_and_burst():
    b = fake(1000)
    assert b._poll(0, 1000, 1) == (True, None)  # starts full: one second of rate
    assert b._poll(1, 1, 1) == (False, S // 1000)  # then one byte per ms
    b._set_now(S // 1000)
    assert b._poll(1, 1, 1) == (True, None)
    b._set_now(100 * S)  # idle a long time: full, not 100 s worth
    assert b._poll(2, 1000, 1) == (True, None)
    assert b._poll(3, 1, 1)[0] is False
    b._abandon(3)
    st = b.stats()
    assert (st["bytes"], st["ios"], st["takes"], st["waiting"]) == (2001, 3, 3, 0)
    assert st["elapsed_seconds"] == 100.0 and st["bytes_per_s"] == pytest.approx(20.01)


def test_fake_oversize_request_passes_on_a_full_bucket_and_leaves_debt():
    b = fake(1000)
    assert b._poll(0, 5000, 1) == (True, None)  # 5 s of rate: larger than the burst
    assert b._poll(1, 1, 1) == (False, 4 * S + S // 1000)  # the debt first
    b._abandon(1)
    assert b._poll(1, 5000, 1) == (False, 5 * S)  # another oversize one: a full bucket
    b._set_now(5 * S)
    assert b._poll(1, 5000, 1) == (True, None)


def test_fake_bytes_and_iops_together():
    b = fake(10**6, 10)
    for _ in range(10):
        assert b._poll(0, 100, 1) == (True, None)
    assert b._poll(0, 100, 1) == (False, S // 10)  # bytes plenty, I/Os out: 10 per second
    b._set_now(S // 10)
    assert b._poll(0, 100, 1) == (True, None)
    b2 = fake(0, 0)  # both unlimited (None, None)
    for _ in range(1000):
        assert b2._poll(0, 2**63, 2**40) == (True, None)


def test_fake_priority_order_and_fifo_among_equals():
    b = fake(100)
    assert b._poll(9, 100, 0) == (True, None)  # empty the bucket
    arrivals = [(0, 0), (1, 5), (2, 0), (3, 5), (4, -3), (5, 5)]  # (key, priority)
    for key, prio in arrivals:
        assert b._poll(key, 10, 1, prio)[0] is False
    served = []
    for step in range(1, len(arrivals) + 1):
        b._set_now(step * S // 10)  # tokens for exactly one 10-byte read more
        passed = [key for key, prio in arrivals if key not in served and b._poll(key, 10, 1, prio)[0]]
        assert len(passed) == 1
        served += passed
    assert served == [1, 3, 5, 0, 2, 4]  # higher first, equal ones in arrival order, background last


def test_fake_head_blocks_smaller_requests_behind_it():
    b = fake(100)
    b._poll(9, 100, 0)
    assert b._poll(0, 90, 1) == (False, 9 * S // 10)
    b._set_now(S // 2)  # 50 bytes back: the 1-byte request behind would fit, but waits
    assert b._poll(1, 1, 1) == (False, None)
    b._set_now(9 * S // 10)
    assert b._poll(1, 1, 1) == (False, None)
    assert b._poll(0, 90, 1) == (True, None)
    assert b._poll(1, 1, 1)[0] is False  # its own tokens now (the head took 90)
    b._set_now(S)
    assert b._poll(1, 1, 1) == (True, None)


def test_fake_sharing_limits_the_sum():
    """Two streams of one budget: what both take over 100 s stays within
    rate * 100 s + one burst; each alone would have taken that much."""
    b = fake(1000)
    taken = {0: 0, 1: 0}
    t = 0
    while t <= 100 * S:
        for key in (0, 1):
            ok, ready = b._poll(key, 300, 1)
            if ok:
                taken[key] += 300
        t += S // 50
        b._set_now(t)
    total = taken[0] + taken[1]
    assert 1000 * 100 - 600 <= total <= 1000 * 100 + 1000
    assert abs(taken[0] - taken[1]) <= 600  # FIFO between equals: they alternate
    assert b.stats()["throttled"] > 0 and b.stats()["throttled_seconds"] > 0


def test_fake_huge_rates_and_sizes_do_not_overflow():
    b = fake(2**64 - 1, 2**64 - 1)
    for _ in range(100):  # a huge rate: requests cost (next to) nothing
        assert b._poll(0, 2**40, 2**40) == (True, None)
    b._set_now(10 * S)  # full again
    assert b._poll(0, 2**64 - 1, 1) == (True, None)  # one second of rate: the whole bucket ...
    assert b._poll(1, 2**64 - 1, 1) == (False, 11 * S)  # ... so the next such waits a second
    b = fake(1, 1)
    assert b._poll(0, 2**64 - 1, 1) == (True, None)  # oversize on a full bucket
    ok, ready = b._poll(1, 1, 1)
    assert ok is False and 0 < ready < 2**63  # saturated, not wrapped
    assert b.stats()["bytes"] == 2**64 - 1


def test_fake_budget_is_refused_by_the_engines(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["a"] = np.arange(10)
    layout = _core.Layout(str(p), "/a")
    with pytest.raises(ValueError, match="fake-clock"):
        layout.stream(n_workers=1, read_ahead=2, block_rows=5, cyclic=False, ordered=True, remainder=True,
                      budget=fake(100))
    with pytest.raises(TypeError, match="Budget"):
        layout.stream(n_workers=1, read_ahead=2, block_rows=5, cyclic=False, ordered=True, remainder=True,
                      budget=object())


# ---- the public object --------------------------------------------------

def test_budget_arguments():
    b = multiload.Budget(50e6, 1000.5, priority=3)
    assert (b.max_bytes_per_s, b.max_iops, b.priority) == (50_000_000, 1001, 3)
    assert multiload.Budget().max_bytes_per_s is None and multiload.Budget().max_iops is None
    assert multiload.Budget(float("inf")).max_bytes_per_s is None
    assert multiload.Budget(10**30).max_bytes_per_s == 2**64 - 1
    assert "max_bytes_per_s=50000000" in repr(b)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="max_bytes_per_s"):
            multiload.Budget(bad)
    with pytest.raises(TypeError, match="max_iops"):
        multiload.Budget(None, "10")
    with pytest.raises(TypeError, match="priority"):
        multiload.Budget(priority=1.5)
    with pytest.raises(TypeError, match="budget"):
        multiload.Streamer("x.h5", budget=5)


def test_share_is_one_budget_with_another_priority():
    b = multiload.Budget(1000)
    bg = b.share(priority=-1)
    assert bg.priority == -1 and b.priority == 0 and bg.max_bytes_per_s == 1000
    assert bg._core is b._core


def test_pickle_keeps_limits_and_sharing():
    b = multiload.Budget(12345, 67, priority=2)
    bg = b.share(-5)
    c, cbg = pickle.loads(pickle.dumps((b, bg)))
    assert (c.max_bytes_per_s, c.max_iops, c.priority, cbg.priority) == (12345, 67, 2, -5)
    assert c._core is cbg._core  # pickled together: still one budget
    assert c._core is not b._core  # a new budget: buckets are per process


# ---- budgeted engines: byte-exact, charged exactly, prompt close ---------

@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("budget") / "data.h5")
    rng = np.random.default_rng(7)
    with h5py.File(p, "w") as f:
        f.create_dataset("contig", data=rng.integers(0, 2**31, size=(50_000, 3), dtype=np.int32))
        f.create_dataset("gzip", data=np.repeat(rng.random((40_000, 1)), 4, axis=1), chunks=(1000, 4),
                         compression="gzip", shuffle=True)
        f.create_dataset("big", data=rng.integers(0, 255, size=(2_000_000,), dtype=np.uint8))
    return p


def stored_bytes(path, name):
    with h5py.File(path) as f:
        ds = f[name]
        n = ds.id.get_num_chunks()
        return sum(ds.id.get_chunk_info(i).size for i in range(n)), n


def read_queue(q):
    out = []
    for guard in q.iter():
        with guard as block:
            out.append(block.copy())
    return np.concatenate(out)


@pytest.mark.parametrize("io_mode", ["io_uring", "pread"])
def test_budgeted_queue_is_byte_exact_and_charged_exactly(h5, io_mode):
    budget = multiload.Budget(max_bytes_per_s=4e9, max_iops=1e6)
    s = multiload.Streamer(h5, budget=budget)
    with h5py.File(h5) as f:
        want_c, want_g = f["contig"][:], f["gzip"][:]
    q = s.get_queue("contig", n_procs=3, block_size=4096, ordered=True, remainder=True, io_mode=io_mode)
    assert np.array_equal(read_queue(q), want_c)
    st = q.stats()["budget"]
    assert st["bytes"] == want_c.nbytes  # every byte of the dataset, once
    assert st["ios"] == st["takes"] == -(-len(want_c) // 4096)  # one read per block
    assert st["bytes_per_s"] > 0 and st["iops"] > 0 and st["elapsed_seconds"] > 0
    q2 = s.get_queue("gzip", n_procs=2, budget=budget.share(1), io_mode=io_mode)  # override, unordered
    got = read_queue(q2)
    assert len(got) == len(want_g) - len(want_g) % q2.block_size
    rows = np.sort(got.view([("", got.dtype)] * 4).ravel())
    assert np.array_equal(rows, np.sort(want_g[:len(got)].view([("", want_g.dtype)] * 4).ravel()))
    st2 = q2.stats()["budget"]
    chunk_bytes, n_chunks = stored_bytes(h5, "gzip")
    per_chunk = chunk_bytes / n_chunks
    assert st2["ios"] == len(got) // 1000  # one I/O per chunk read
    assert st2["bytes"] == pytest.approx(per_chunk * st2["ios"], rel=0.2)  # stored (compressed) bytes
    whole = budget.stats()  # the budget as a whole: both queues
    assert whole["bytes"] == st["bytes"] + st2["bytes"] and whole["ios"] == st["ios"] + st2["ios"]
    q3 = s.get_queue("contig", budget=None)  # the Streamer's budget applies
    assert "budget" in q3.stats()
    q3.close()
    plain = multiload.Streamer(h5).get_queue("contig")
    assert "budget" not in plain.stats()
    plain.close()


def test_throttled_queue_waits_and_says_so(h5):
    """A budget below the data: the queue still delivers every byte; its
    stats count throttled reads and time (not how long)."""
    budget = multiload.Budget(max_bytes_per_s=400_000)  # 600 KB of data: burst + about half a second
    q = multiload.Streamer(h5).get_queue("contig", n_procs=2, block_size=10_000, ordered=True, remainder=True,
                                         budget=budget)
    with h5py.File(h5) as f:
        assert np.array_equal(read_queue(q), f["contig"][:])
    st = q.stats()["budget"]
    assert st["throttled"] > 0 and st["throttled_seconds"] > 0
    assert st["bytes"] == 50_000 * 12 and st["waiting"] == 0


def test_queue_close_under_a_tiny_budget_returns_promptly(h5):
    budget = multiload.Budget(max_bytes_per_s=1000)  # a block of 131072 bytes: two minutes each
    q = multiload.Streamer(h5).get_queue("big", n_procs=4, block_size=131072, budget=budget)
    with q.get(timeout=30) as block:  # the first passes on the full bucket (oversize)
        assert len(block) == 131072
    with pytest.raises(TimeoutError):
        q.get(timeout=0.3)  # the next ones are throttled: nothing within 0.3 s
    assert q.stats()["budget"]["waiting"] >= 1
    t0 = time.monotonic()
    q.close()
    assert time.monotonic() - t0 < PROMPT
    assert budget.stats()["waiting"] == 0


def test_budget_shared_by_two_queues_wakes_only_the_closed_one(h5):
    budget = multiload.Budget(max_bytes_per_s=1000)
    s = multiload.Streamer(h5, budget=budget)
    q1 = s.get_queue("big", n_procs=2, block_size=131072)
    q2 = s.get_queue("big", n_procs=2, block_size=131072)
    deadline = time.monotonic() + 30
    while budget.stats()["waiting"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    q1.close()
    assert time.monotonic() - t0 < PROMPT
    assert budget.stats()["waiting"] >= 1  # q2's workers still wait for tokens
    q2.close()
    assert budget.stats()["waiting"] == 0


@pytest.mark.parametrize("name", ["contig", "gzip"])
def test_budgeted_reader_is_byte_exact_and_charged(h5, name):
    budget = multiload.Budget(max_bytes_per_s=4e9)
    with h5py.File(h5) as f:
        want = f[name][:]
    rows = np.random.default_rng(1).choice(len(want), 3000, replace=False)
    with multiload.Reader(h5, n_procs=3, budget=budget) as r:
        ds = r.get_dataset(name)
        assert np.array_equal(r.read(ds[:]), want)
        assert np.array_equal(r.read(ds[np.sort(rows)]), want[np.sort(rows)])
        assert np.array_equal(r.request(ds[100:200], ds.create_stage(100)).result(timeout=30), want[100:200])
        st = r.stats()
        assert st["inlined"] == 0 and st["mapped"] == st["helped"] == 0  # every byte by a worker
        assert st["budget"]["bytes"] >= (want.nbytes if name == "contig" else stored_bytes(h5, name)[0])
        assert budget.stats()["bytes"] == st["budget"]["bytes"]
    plain = multiload.Reader(h5)
    assert "budget" not in plain.stats()
    plain.close()


def test_reader_stop_and_close_under_a_tiny_budget_return_promptly(h5):
    budget = multiload.Budget(max_bytes_per_s=1000)
    r = multiload.Reader(h5, n_procs=2, budget=budget)
    ds = r.get_dataset("big")
    first = r.request(ds[0:100_000], ds.create_stage(100_000))  # oversize: passes on the full bucket
    assert np.array_equal(first.result(timeout=30), h5py.File(h5)["big"][0:100_000])
    slow = [r.request(ds[i:i + 100_000], ds.create_stage(100_000)) for i in range(100_000, 500_000, 100_000)]
    deadline = time.monotonic() + 30
    while budget.stats()["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert budget.stats()["waiting"] >= 1
    t0 = time.monotonic()
    r.close()  # returns at once; the queued requests would drain at the budget's rate ...
    r.stop()  # ... so stop them: the sleeping reads wake now
    assert time.monotonic() - t0 < PROMPT
    for q in slow:
        with pytest.raises(multiload.QueueClosedException):
            q.result(timeout=PROMPT)
    assert budget.stats()["waiting"] == 0


def write_files(d, n, seed, max_size):
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        p = os.path.join(d, f"f{i:04d}.bin")
        data = rng.randbytes(rng.randrange(1, max_size))
        with open(p, "wb") as f:
            f.write(data)
        out[p] = data
    return out


@pytest.mark.parametrize("io_mode", ["io_uring", "pread"])
def test_budgeted_file_loader_is_byte_exact_and_charged_exactly(tmp_path, io_mode):
    files = write_files(str(tmp_path), 200, 3, 20_000)
    budget = multiload.Budget(max_bytes_per_s=2e9, max_iops=1e6)
    with multiload.FileLoader(8, 20_000, 1, n_threads=2, io_mode=io_mode, budget=budget) as loader:
        loader.start()
        w = loader.get_worker_context(0)
        seen = {}
        todo = sorted(files)
        pending = 0
        while todo or pending:
            while todo and w.request(todo[-1]):
                todo.pop()
                pending += 1
            with w.wait_get(timeout=30) as e:
                seen[e.get_filepath()] = e.get_data()
            pending -= 1
        assert seen == files
        st = loader.stats()["budget"]
        assert st["bytes"] == sum(map(len, files.values())) and st["ios"] == len(files)
        assert budget.stats()["bytes"] == st["bytes"]


def test_file_loader_close_under_a_tiny_budget_returns_promptly(tmp_path):
    files = write_files(str(tmp_path), 20, 4, 20_000)
    budget = multiload.Budget(max_bytes_per_s=1000)  # 10 KB files: ten seconds each
    loader = multiload.FileLoader(16, 20_000, 1, n_threads=2, budget=budget)
    loader.start()
    w = loader.get_worker_context(0)
    for p in sorted(files)[:16]:  # the queue depth
        assert w.request(p)
    deadline = time.monotonic() + 30
    while budget.stats()["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert budget.stats()["waiting"] >= 1
    t0 = time.monotonic()
    loader.close()
    assert time.monotonic() - t0 < PROMPT
    assert budget.stats()["waiting"] == 0


def test_budget_stats_seen_from_threads_are_consistent(h5):
    """Budget.stats() while four queues read at once: the counters only grow."""
    budget = multiload.Budget(max_bytes_per_s=3e9)
    s = multiload.Streamer(h5, budget=budget)
    queues = [s.get_queue("contig", n_procs=2, block_size=2048) for _ in range(4)]
    last = 0
    threads = [threading.Thread(target=read_queue, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        now = budget.stats()["bytes"]
        assert now >= last
        last = now
        time.sleep(0.001)
    for t in threads:
        t.join()
    assert budget.stats()["bytes"] == sum(q.stats()["budget"]["bytes"] for q in queues)


def test_docs_example_runs():
    """docs/budgets.md's "An example that runs" block, as written."""
    import re
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "budgets.md")).read()
    section = doc.split("## An example that runs", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "docs/budgets.md", "exec"), {})


# ---- the Writer ----------------------------------------------------------

@pytest.mark.parametrize("compression", [None, "gzip"])
def test_budgeted_writer_is_byte_exact_and_charged_exactly(tmp_path, compression):
    """Every chunk write takes its stored bytes and one I/O; what h5py reads
    back is what was appended."""
    path = tmp_path / "w.h5"
    data = np.repeat(np.random.default_rng(3).random((20_000, 1)), 4, axis=1)
    budget = multiload.Budget(max_bytes_per_s=1 << 40, max_iops=1 << 30)
    with multiload.Writer(path, "w", n_procs=2, budget=budget) as w:
        ds = w.create_dataset("x", (0, 4), "<f8", chunks=(1000, 4), maxshape=(None, 4), compression=compression,
                              shuffle=compression is not None)
        ds.append(data)
        w.flush()
        st = w.stats()["budget"]
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], data)
    stored, n_chunks = stored_bytes(str(path), "x")
    assert st["bytes"] == stored and st["ios"] == n_chunks == 20
    assert budget.stats()["bytes"] == stored


def test_writer_abort_under_a_tiny_budget_returns_promptly(tmp_path):
    """A writer throttled to 1000 B/s with blocks queued: close(abort=True)
    wakes the worker asleep on the budget; nothing hangs, rows written
    before survive."""
    path = tmp_path / "slow.h5"
    budget = multiload.Budget(max_bytes_per_s=1000)
    w = multiload.Writer(path, "w", n_procs=1, budget=budget)
    ds = w.create_dataset("x", (0,), "<u1", chunks=(100_000,), maxshape=(None,))
    ds.append(np.arange(400_000, dtype=np.uint64).astype(np.uint8))  # four chunks: minutes at this rate
    deadline = time.monotonic() + 30
    while w.stats()["budget"]["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.stats()["budget"]["waiting"] >= 1
    t0 = time.monotonic()
    w.close(abort=True)
    assert time.monotonic() - t0 < PROMPT
    assert budget.stats()["waiting"] == 0
    with h5py.File(path, "r") as f:  # the first chunk passed on the full bucket and was written
        got = f["x"][:100_000]
    np.testing.assert_array_equal(got, np.arange(100_000, dtype=np.uint64).astype(np.uint8))
