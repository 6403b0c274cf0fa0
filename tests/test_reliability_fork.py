"""fork(): a queue, guard or Reader from the parent used in a forked child
either works or raises a clear RuntimeError -- never hangs or corrupts --
and the child can open its own. Each case runs in a fresh interpreter with
a timeout, so a hang fails the test instead of stalling the run."""

import pytest

import reliability_files as rf

pytestmark = pytest.mark.timeout(90)

PRELUDE = r"""
import os, sys, threading, numpy as np
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests"))
import reliability_files as rf
import multiload
fn = rf.write_data_file(os.path.join(os.environ["DIR"], "data.h5"))

def wait_child(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)

def child_streams_its_own(path):
    try:
        q = multiload.Streamer(fn).get_queue(path, n_procs=2, block_size=rf.BLOCK)
        with q:
            blocks, errors = rf.drain(q)
        assert errors == [] and len(blocks) == rf.N // rf.BLOCK, (errors, sorted(blocks))
        rf.check_blocks(blocks, rf.values())
    except BaseException:  # the child leaves with os._exit: say why here
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        raise
"""


def run(tmp_path, body, env=None):
    e = {"ROOT": rf.ROOT, "DIR": str(tmp_path)}
    e.update(env or {})
    r = rf.run_python(PRELUDE + body, timeout=60, env=e)
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    return r.stdout


@pytest.mark.parametrize("io_mode", ["pread", "uring"])
def test_streamer_queue_in_forked_child(tmp_path, io_mode):
    out = run(tmp_path, r"""
q = multiload.Streamer(fn).get_queue("gz", n_procs=2, read_ahead=3, block_size=rf.BLOCK, ordered=True)
g = q.get(timeout=20)
pid = os.fork()
if pid == 0:
    code = 1
    try:
        try:
            q.get(timeout=5)
            print("child: parent's queue worked?!", flush=True)
        except RuntimeError as e:
            assert "created in another process" in str(e), e
        with g as block:  # a guard taken before fork: memory is the child's copy
            assert np.array_equal(block, rf.values()[:rf.BLOCK])
        st = q.stats
        q.close()  # forgets the parent's stream, does not touch its locks
        child_streams_its_own("gz")
        child_streams_its_own("contig")
        code = 0
    finally:
        os._exit(code)
assert wait_child(pid) == 0
g.release()
blocks, errors = rf.drain(q)  # the parent's queue is unaffected
assert errors == [] and sorted(blocks) == list(range(1, rf.N // rf.BLOCK))
rf.check_blocks(blocks, rf.values())
q.close()
print("OK")
""", env={"MULTILOAD_IO": io_mode})
    assert out.strip().endswith("OK")


def test_fork_while_workers_read(tmp_path):
    """fork() while workers are inside (slow) reads and HDF5 look-ups: the
    child's own queues still work (the HDF5 lock is held across fork)."""
    out = run(tmp_path, r"""
q = multiload.Streamer(fn).get_queue("gzf32", n_procs=3, block_size=rf.BLOCK, cyclic=True)
for round in range(3):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child_streams_its_own("f32")
            code = 0
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    with q.get(timeout=20) as block:
        assert block.shape == (rf.BLOCK, rf.COLS)
q.close()
print("OK")
""", env={"MULTILOAD_FAULTS": "slow~0.5/3:50"})
    assert out.strip().endswith("OK")


def test_multiprocessing_fork_context(tmp_path):
    """A parent's queue passed to a fork-started multiprocessing child raises
    RuntimeError there; the child's own Streamer works."""
    out = run(tmp_path, r"""
import multiprocessing as mp
q = multiload.Streamer(fn).get_queue("contig", n_procs=2, block_size=rf.BLOCK)
def work(conn):
    try:
        q.get(timeout=5)
        conn.send("parent queue worked?!")
    except RuntimeError as e:
        try:
            child_streams_its_own("gz")
            conn.send("ok: " + str(e))
        except Exception as e2:
            conn.send("own failed: %r" % e2)
ctx = mp.get_context("fork")
a, b = ctx.Pipe()
p = ctx.Process(target=work, args=(b,))
p.start()
assert a.poll(40), "no answer from the child"
msg = a.recv()
p.join(20)
assert msg.startswith("ok: ") and "another process" in msg, msg
assert p.exitcode == 0
q.close()
print("OK")
""")
    assert out.strip().endswith("OK")


def test_reader_in_forked_child(tmp_path):
    """A Reader made before fork: in the child it raises a clear error or
    works (correct data) -- it never hangs; a new Reader in the child works."""
    out = run(tmp_path, r"""
r = multiload.Reader(fn, n_procs=2)
ds = r.get_dataset("gz")
st = ds.create_stage((10, rf.COLS))
assert np.array_equal(r.request(ds[5:15], st).get(), rf.values()[5:15])
pid = os.fork()
if pid == 0:
    code = 1
    try:
        try:
            got = r.request(ds[20:30], st).get()
            assert np.array_equal(got, rf.values()[20:30])
            print("child: parent's reader works", flush=True)
        except RuntimeError as e:
            assert "process" in str(e), e
            print("child: parent's reader refused:", e, flush=True)
        r2 = multiload.Reader(fn, n_procs=2)
        ds2 = r2.get_dataset("gz")
        st2 = ds2.create_stage((10, rf.COLS))
        assert np.array_equal(r2.request(ds2[30:40], st2).get(), rf.values()[30:40])
        r2.close(wait=True)
        code = 0
    finally:
        os._exit(code)
assert wait_child(pid) == 0
assert np.array_equal(r.request(ds[40:50], st).get(), rf.values()[40:50])
r.close(wait=True)
print("OK")
""")
    assert out.strip().endswith("OK")
    assert "child: parent's reader" in out


def test_forked_child_cannot_end_a_loader_queues_lease(tmp_path):
    """A LoaderProcess queue inherited over fork(): the child's copy refuses
    to take and its close() leaves the parent's stream and lease alone."""
    import os

    import h5py
    import numpy as np

    import multiload
    path = str(tmp_path / "lp.h5")
    data = np.arange(20_000 * 4, dtype="f4").reshape(-1, 4)
    with h5py.File(path, "w") as f:
        f["x"] = data
    with multiload.LoaderProcess(path, "/x", n_procs=1, block_size=500) as loader:
        with loader.connect(0, ordered=True) as q:
            q.get().release()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    q.get()
                    code = 3
                except RuntimeError:
                    pass
                q.close()
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            rest = [(g.start, np.array(g.array)) for g in q]
    assert [s for s, _ in sorted(rest, key=lambda r: r[0])] == list(range(500, 20_000, 500))
    for start, arr in rest:
        np.testing.assert_array_equal(arr, data[start:start + 500])
