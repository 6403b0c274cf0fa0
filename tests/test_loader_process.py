"""multiload.LoaderProcess: one loader process, several consumer processes.

Every block a consumer gets is compared with h5py's rows for it; the fault
tests kill consumers and the loader with SIGKILL, interrupt with SIGINT and
check that nothing is left behind (the loader process, its shared
mappings, /dev/shm entries, file descriptors).
"""

import gc
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

import multiload

import loader_consumers as consumers

N_ROWS = 20_000
BLOCK = 500


@pytest.fixture(scope="module")
def lp_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("loader") / "data.h5")
    rng = np.random.default_rng(7)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=rng.standard_normal((N_ROWS, 16)).astype("f4"))
        f.create_dataset("z", data=rng.integers(0, 1 << 30, (N_ROWS, 4)), chunks=(1000, 4),
                         compression="gzip", shuffle=True)
        f.create_dataset("empty", shape=(0, 3), dtype="i2")
        tab = np.zeros(3000, dtype=[("a", "<i4"), ("b", "<f8")])
        tab["a"] = np.arange(3000)
        tab["b"] = np.arange(3000) * 0.5
        f.create_dataset("table", data=tab)
    return path


@pytest.fixture(scope="module")
def truth(lp_file):
    with h5py.File(lp_file, "r") as f:
        return {k: f[k][()] for k in ("x", "z", "table")}


def check_blocks(got, ref, block=BLOCK):
    """Each (start, block) equals h5py's rows; returns the starts."""
    for start, arr in got:
        np.testing.assert_array_equal(arr, ref[start:start + len(arr)])
        assert len(arr) == min(block, len(ref) - start)
    return sorted(s for s, _ in got)


def memfd_maps(pid="self"):
    with open(f"/proc/{pid}/maps") as f:
        return sum("memfd:multiload-ring" in line for line in f)


def gone(pid, within=10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # dead; its parent reaps it
        except OSError:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def loader(lp_file):
    lp = multiload.LoaderProcess(lp_file, "/x", n_procs=2, block_size=BLOCK)
    yield lp
    lp.close()
    assert gone(lp.pid)


def spawn_ctx():
    return multiprocessing.get_context("spawn")


# -- one consumer ----------------------------------------------------------------


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_one_consumer_gets_every_row(lp_file, truth, start_method):
    with multiload.LoaderProcess(lp_file, "/x", n_procs=2, start_method=start_method) as lp:
        with lp.connect(0, block_size=BLOCK, ordered=True) as q:
            got = []
            for g in q:
                with g as b:
                    got.append((g.start, b.copy()))
            st = q.stats()
            del g, b  # a guard (and any view of it) keeps the mapping; the last one unmaps it
        assert [s for s, _ in got] == list(range(0, N_ROWS, BLOCK))  # ordered
        check_blocks(got, truth["x"])
        assert st["blocks"] == N_ROWS // BLOCK and st["bytes"] == truth["x"].nbytes
        assert st["loader_pid"] == lp.pid and st["io_mode"] in ("io_uring", "pread")
        pid = lp.pid
    assert gone(pid)
    assert memfd_maps() == 0


def test_unordered_chunked_field_and_shuffle(loader, truth):
    with loader.connect(1, path="/z", block_size=1000) as q:
        got = [(g.start, np.array(g.array)) for g in q]
    assert check_blocks(got, truth["z"], 1000) == list(range(0, N_ROWS, 1000))
    with loader.connect(2, path="/table", block_size=300, field="b") as q:
        got = [(g.start, np.array(g.array)) for g in q]
    assert check_blocks(got, truth["table"]["b"], 300) == list(range(0, 3000, 300))
    with loader.connect(3, shuffle="block", seed=11, epoch=2, ordered=True) as q:
        order = []
        for g in q:
            order.append(g.start)
            with g as b:
                np.testing.assert_array_equal(b, truth["x"][g.start:g.start + BLOCK])
    # the same order a local Streamer queue gives for the same key
    with multiload.Streamer(loader._filename) as s:
        local = [g.start for g in s.get_queue("/x", block_size=BLOCK, shuffle="block", seed=11, epoch=2,
                                               ordered=True)]
    assert order == local and sorted(order) == list(range(0, N_ROWS, BLOCK))


def test_remainder_cyclic_and_empty(loader, truth):
    with loader.connect(0, block_size=3000, remainder=True) as q:
        got = [(g.start, np.array(g.array)) for g in q]
    assert sorted(s for s, _ in got) == list(range(0, N_ROWS, 3000))
    for start, arr in got:
        np.testing.assert_array_equal(arr, truth["x"][start:start + 3000])
    with loader.connect(0, cyclic=True, block_size=3000, ordered=True) as q:
        starts = []
        for _ in range(10):
            with q.get() as b:
                starts.append(len(b))
        assert q.n_blocks is None and starts == [3000] * 10
    with loader.connect(0, path="/empty") as q:
        assert q.closed and q.get() is multiload.QueueClosed and list(q) == []
        assert q.shape == (0, 3)


# -- several consumers --------------------------------------------------------------


def test_three_consumer_processes_get_their_shards(loader, truth):
    ctx = spawn_ctx()
    out = ctx.Queue()
    procs = [ctx.Process(target=consumers.stream_all, args=(loader, r, out, {"world_size": 3}))
             for r in range(3)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        kind, cid, payload = out.get(timeout=120)
        assert kind == "ok", payload
        results[cid] = payload
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    n = N_ROWS // BLOCK
    for r in range(3):
        starts = check_blocks(results[r], truth["x"])
        assert starts == [k * BLOCK for k in range(r, 3 * (n // 3), 3)]


def test_consumers_with_their_own_datasets(loader, truth):
    ctx = spawn_ctx()
    out = ctx.Queue()
    jobs = {0: {"path": "/x"}, 1: {"path": "/z", "block_size": 1000}, 2: {"path": "/table", "block_size": 250}}
    procs = [ctx.Process(target=consumers.stream_all, args=(loader, cid, out, opts)) for cid, opts in jobs.items()]
    for p in procs:
        p.start()
    for _ in procs:
        kind, cid, got = out.get(timeout=120)
        assert kind == "ok", got
        name = jobs[cid]["path"][1:]
        ref = truth[name]
        starts = check_blocks(got, ref, jobs[cid].get("block_size", BLOCK))
        assert starts == list(range(0, len(ref) - len(ref) % jobs[cid].get("block_size", BLOCK),
                                    jobs[cid].get("block_size", BLOCK)))
    for p in procs:
        p.join(30)


# -- faults ----------------------------------------------------------------------


def test_killed_consumer_is_reclaimed_and_others_finish(loader, truth):
    ctx = spawn_ctx()
    out = ctx.Queue()
    victim = ctx.Process(target=consumers.stream_then_die, args=(loader, 5, out, 3, {"cyclic": True}))
    victim.start()
    kind, cid, held, vpid = out.get(timeout=120)
    assert kind == "holding" and len(held) == 3
    survivor = ctx.Process(target=consumers.stream_all, args=(loader, 6, out, {"world_size": 1}))
    survivor.start()
    victim.join(30)
    assert victim.exitcode == -signal.SIGKILL
    kind, cid, got = out.get(timeout=120)
    assert kind == "ok" and cid == 6, got
    assert check_blocks(got, truth["x"]) == list(range(0, N_ROWS, BLOCK))
    survivor.join(30)
    # the victim's lease ended with its process: its id is free again, and the
    # loader unmapped its ring (only the new queue's is mapped there now)
    deadline = time.monotonic() + 10
    while memfd_maps(loader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert memfd_maps(loader.pid) == 0
    with loader.connect(5) as q:
        assert memfd_maps(loader.pid) == 1
        assert q.get() is not multiload.QueueClosed


def test_killed_loader_raises_in_owner_within_a_second(lp_file):
    lp = multiload.LoaderProcess(lp_file, "/x", n_procs=1)
    try:
        q = lp.connect(0, cyclic=True, block_size=BLOCK)
        with q.get() as b:
            kept = b  # a view kept past the loader's death stays readable
            first = b.copy()
        os.kill(lp.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(multiload.LoaderDiedError, match=r"signal 9 \(SIGKILL\)"):
            while True:
                q.get().release()
        assert time.monotonic() - t0 < 5.0  # the contract is ~1 s; generous for a loaded machine
        assert kept.shape == first.shape  # still mapped
        q.close()
        with pytest.raises(multiload.LoaderDiedError):
            lp.connect(1)
    finally:
        lp.close()
    del kept, b
    gc.collect()
    assert memfd_maps() == 0


def test_killed_loader_raises_in_consumer_processes(lp_file):
    lp = multiload.LoaderProcess(lp_file, "/x", n_procs=1, cyclic=True)
    ctx = spawn_ctx()
    out = ctx.Queue()
    procs = [ctx.Process(target=consumers.wait_for_death, args=(lp, i, out)) for i in range(3)]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            assert out.get(timeout=120)[0] == "streaming"
        os.kill(lp.pid, signal.SIGKILL)
        t0 = time.monotonic()
        for _ in procs:
            kind, cid, when, *msg = out.get(timeout=60)
            assert kind == "died", msg
            assert when - t0 < 5.0
            assert f"loader process {lp.pid}" in msg[0]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    finally:
        lp.close()
        for p in procs:
            if p.is_alive():
                p.kill()


def test_owner_close_ends_consumer_streams(lp_file):
    lp = multiload.LoaderProcess(lp_file, "/x", n_procs=1, cyclic=True)
    ctx = spawn_ctx()
    out = ctx.Queue()
    p = ctx.Process(target=consumers.wait_for_death, args=(lp, 0, out))
    p.start()
    assert out.get(timeout=120)[0] == "streaming"
    pid = lp.pid
    lp.close()
    kind, *_ = out.get(timeout=60)
    assert kind == "closed"  # a clean shutdown is the end of the stream, not an error
    p.join(30)
    assert gone(pid)


def test_block_errors_reach_the_consumer(lp_file, monkeypatch):
    monkeypatch.setenv("MULTILOAD_FAULTS", "eio@3")  # the spawned loader inherits it
    with multiload.LoaderProcess(lp_file, "/x", n_procs=1, block_size=BLOCK, ordered=True) as lp:
        monkeypatch.delenv("MULTILOAD_FAULTS")
        with lp.connect(0) as q:
            errors, blocks = [], 0
            while True:
                try:
                    g = q.get()
                except OSError as e:
                    errors.append(e)
                    continue
                if g is multiload.QueueClosed:
                    break
                blocks += 1
                g.release()
            assert q.stats()["errors"] == 1
    assert len(errors) == 1 and blocks == N_ROWS // BLOCK - 1
    assert errors[0].filename == lp_file and "/x" in str(errors[0])


SCRIPT = textwrap.dedent("""
    import os, sys, time
    import multiload
    if __name__ == "__main__":
        with multiload.LoaderProcess(sys.argv[1], "/x", n_procs=1, cyclic=True) as lp:
            print("loader", lp.pid, flush=True)
            with lp.connect(0) as q:
                print("streaming", flush=True)
                try:
                    while True:
                        q.get().release()
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
        print("closed", flush=True)
""")


def run_script(tmp_path, lp_file, body=SCRIPT):
    script = tmp_path / "consumer.py"
    script.write_text(body)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, str(script), lp_file], stdout=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def test_ctrl_c_to_the_process_group_drains_cleanly(tmp_path, lp_file):
    shm_before = set(os.listdir("/dev/shm"))
    proc = run_script(tmp_path, lp_file)
    loader_pid = int(proc.stdout.readline().split()[1])
    assert proc.stdout.readline().strip() == "streaming"
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process of the group
    rest, _ = proc.communicate(timeout=60)
    assert rest.split() == ["interrupted", "closed"]
    assert proc.returncode == 0
    assert gone(loader_pid)
    assert set(os.listdir("/dev/shm")) == shm_before


def test_owner_killed_loader_exits(tmp_path, lp_file):
    proc = run_script(tmp_path, lp_file)
    loader_pid = int(proc.stdout.readline().split()[1])
    assert proc.stdout.readline().strip() == "streaming"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert gone(loader_pid, within=30)  # its pidfd of the owner woke it


# -- AsyncLoader's pattern, leases, bad use -----------------------------------------


def test_become_loader_in_a_process_of_ones_own(lp_file, truth):
    lp = multiload.LoaderProcess(lp_file, "/x", n_procs=2, start=False, block_size=BLOCK)
    p = spawn_ctx().Process(target=lp.become_loader)
    p.start()
    try:
        with lp.get_worker_context(0) as q:  # connect waits for the loader to listen
            got = [(g.start, np.array(g.array)) for g in q]
        assert check_blocks(got, truth["x"]) == list(range(0, N_ROWS, BLOCK))
        assert lp.pid == p.pid
    finally:
        lp.close()  # the owner's close stops a become_loader process too
        p.join(30)
    assert p.exitcode == 0


def test_consumer_id_is_a_lease(loader):
    q = loader.connect(0)
    with pytest.raises(ValueError, match="consumer id 0 is already connected"):
        loader.connect(0)
    q.close()  # returns once the loader has freed the id
    for _ in range(20):  # epochs: close and connect again with the same id, at once
        with loader.connect(0) as q2:
            assert q2.get() is not multiload.QueueClosed


def test_bad_use(lp_file, loader, tmp_path):
    with pytest.raises(ValueError, match="fork"):
        multiload.LoaderProcess(lp_file, "/x", start_method="fork")
    with pytest.raises(ValueError, match="start_method"):
        multiload.LoaderProcess(lp_file, "/x", start_method="thread")
    with pytest.raises(TypeError, match="bogus"):
        multiload.LoaderProcess(lp_file, "/x", bogus=1)
    with pytest.raises(TypeError, match="consumer_id"):
        loader.connect(-1)
    with pytest.raises(TypeError, match="consumer_id"):
        loader.connect("a")
    with pytest.raises(KeyError):
        loader.connect(0, path="/nope")
    with pytest.raises(FileNotFoundError):
        loader.connect(0, filename=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError):
        loader.connect(0, block_size=0)
    with pytest.raises(TypeError, match="unpickl|pickle"):
        with loader.connect(0) as q:
            pickle.dumps(q)
    with loader.connect(0) as q:  # the failed connects left no lease behind
        assert q.get() is not multiload.QueueClosed
    lp = multiload.LoaderProcess(lp_file, "/x", start=False)
    with pytest.raises(ConnectionError, match="no loader process"):
        lp.connect(0, timeout=0.2)
    lp.close()
    with pytest.raises(RuntimeError, match="closed"):
        lp.connect(0)


def test_loader_pickles_and_views_outlive_guards(loader, truth):
    copy = pickle.loads(pickle.dumps(loader))
    assert loader.is_owner and not copy.is_owner
    with copy.connect(9, ordered=True) as q:
        g = q.get()
        view = g.array
        start = g.start
        np.testing.assert_array_equal(view, truth["x"][start:start + BLOCK])
        g.release()
        with pytest.raises(RuntimeError, match="released"):
            g.array
    assert view.shape == (BLOCK, 16)  # stale but mapped
    copy.close()  # a copy's close() leaves the loader running
    with loader.connect(9) as q:
        assert q.get() is not multiload.QueueClosed


def test_no_leftovers_after_cycles(loader):
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    for i in range(200):
        with loader.connect(i % 3, block_size=5000) as q:
            for g in q:
                g.release()
            del g  # the last guard would keep its ring mapped
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds + 2
    assert memfd_maps() == 0
    deadline = time.monotonic() + 10
    while memfd_maps(loader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert memfd_maps(loader.pid) == 0


def rss_kb(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


@pytest.mark.slow
def test_ten_thousand_cycles_flat_rss(loader):
    def cycles(n):
        for i in range(n):
            with loader.connect(i % 4, block_size=10_000) as q:
                for g in q:
                    g.release()
                del g
    cycles(1000)  # warm up: allocator arenas, caches
    gc.collect()
    ours, theirs = rss_kb(), rss_kb(loader.pid)
    cycles(9000)
    gc.collect()
    assert rss_kb() - ours < 20_000
    assert rss_kb(loader.pid) - theirs < 20_000
    assert memfd_maps() == 0

