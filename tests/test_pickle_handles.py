"""Picklable handles (issue 11): the Streamer, the Reader and its datasets
pickle as descriptions and open lazily in the process that uses them.

Every row read in a worker is compared with h5py's reading of the same
rows in the test process. Worker code lives in tests/pickle_workers.py so
that spawn and forkserver workers import it by name.
"""

import errno
import multiprocessing as mp
import os
import pickle

import h5py
import numpy as np
import pytest

import multiload
import pickle_workers as pw
import reliability_files as rf

pytestmark = pytest.mark.timeout(120)

N = 3000
COLS = 4
TABLE = np.dtype([("a", "<i4"), ("b", "<f8")])
VL_ROWS = 50


def write_file(fn):
    """contig (int32, contiguous), gz (float64, gzip chunks of 64 rows),
    table (compound, chunked) and vl (VLArray of int16 rows)."""
    rng = np.random.default_rng(11)
    with h5py.File(fn, "w") as f:
        f.create_dataset("contig", data=rng.integers(-2**31, 2**31, (N, COLS), dtype="<i4"))
        f.create_dataset("gz", data=rng.standard_normal((N, COLS)), chunks=(64, COLS), compression="gzip",
                         shuffle=True)
        t = np.zeros(N, TABLE)
        t["a"] = rng.integers(0, 1000, N)
        t["b"] = rng.standard_normal(N)
        f.create_dataset("table", data=t, chunks=(100,))
        vl = f.create_dataset("vl", (VL_ROWS,), dtype=h5py.vlen_dtype(np.int16))
        for i in range(VL_ROWS):
            vl[i] = np.arange(i % 7, dtype=np.int16) * (i + 1)
    return fn


@pytest.fixture(scope="module")
def fn(tmp_path_factory):
    return write_file(str(tmp_path_factory.mktemp("pickle") / "data.h5"))


@pytest.fixture(scope="module")
def truth(fn):
    """h5py's reading of every dataset (vl: a list of row arrays)."""
    with h5py.File(fn, "r") as f:
        out = {k: f[k][...] for k in ("contig", "gz", "table")}
        out["vl"] = [np.asarray(r) for r in f["vl"][...]]
    return out


def vl_rows(truth, rows):
    return np.concatenate([truth["vl"][i] for i in rows])


# ------------------------------------------------------------ in one process

def test_streamer_round_trip(fn, truth):
    s = multiload.Streamer(fn, driver="H5FD_SEC2", node_cache_slots=4)
    q = s.get_queue("gz", n_procs=2, block_size=100)  # a queue in progress is not part of the description
    q.get(timeout=rf.GET_TIMEOUT).release()
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._local_pid is None, "an unpickled Streamer opens nothing until it is used"
    assert s2.filename == fn and s2._h5_kw_args == {"driver": "H5FD_SEC2", "node_cache_slots": 4}
    assert s2._file.identity == s._file.identity == multiload._handle.FileIdentity.of(fn)
    assert np.array_equal(pw.stream_all(s2, "gz", 128), truth["gz"])
    assert np.array_equal(s2.get_remainder("contig", 1000), truth["contig"][N - N % 1000:])
    q.close()
    s2.close()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        s3 = pickle.loads(pickle.dumps(s, protocol))
        assert s3.filename == fn and s3._file.identity == s._file.identity
        assert np.array_equal(s3.get_remainder("gz", 1000), truth["gz"][N - N % 1000:])
    # driver='H5FD_DIRECT' (direct=True by default) survives the trip
    assert pickle.loads(pickle.dumps(multiload.Streamer(fn, DRIVER="H5FD_DIRECT")))._direct is True


def test_reader_and_datasets_round_trip(fn, truth):
    r = multiload.Reader(fn, n_procs=2, cache_bytes=1 << 20, io_mode="pread", inline_reads=False)
    names = ("contig", "gz", "table", "vl")
    dss = [r.get_dataset(n) for n in names]
    st = dss[1].create_stage(10)
    pending = r.request(dss[1][0:10], st)  # in flight while pickled: stays the original's
    r2, *dss2 = pickle.loads(pickle.dumps((r, *dss)))
    assert np.array_equal(pending.get(), truth["gz"][:10])
    assert all(d._reader is r2 for d in dss2), "datasets pickled together share one Reader"
    assert r2._options == r._options and r2._core is None
    for d, d2 in zip(dss, dss2):
        assert type(d2) is type(d) and d2.dtype == d.dtype and d2.shape == d.shape and d2._path == d._path
    contig, gz, table, vl = dss2
    st2 = gz.create_stage(7)
    assert np.array_equal(r2.request(gz[100:107], st2).get(), truth["gz"][100:107])
    assert r2._local_pid == os.getpid() and r2._core is not r._core
    rows = [2999, 5, 5, 1700, 0]
    assert np.array_equal(r2.read(contig[rows]), truth["contig"][rows])
    assert np.array_equal(r2.read(table.read(10, 50, field="b")), truth["table"]["b"][10:50])
    assert np.array_equal(r2.read(table[7]), truth["table"][7])
    assert np.array_equal(r2.read(vl[[3, 9, 1]]), vl_rows(truth, [3, 9, 1]))
    assert r2.get_dataset("gz") is gz
    # a dataset alone brings its own Reader, with the same options
    alone = pickle.loads(pickle.dumps(dss[0]))
    assert alone._reader is not r2 and alone._reader._options == r._options
    assert np.array_equal(alone._reader.read(alone[-3:]), truth["contig"][-3:])
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        d3 = pickle.loads(pickle.dumps(dss[2], protocol))
        assert np.array_equal(d3._reader.read(d3[3:9]), truth["table"][3:9])
        d3._reader.close(wait=True)
    # another description format is refused with a clear error
    func, (cls, version, desc) = r.__reduce__()
    with pytest.raises(ValueError, match="description format 99"):
        func(cls, 99, desc)
    # a closed Reader pickles as closed
    r.close(wait=True)
    r3 = pickle.loads(pickle.dumps(r))
    with pytest.raises(RuntimeError, match="closed reader"):
        r3.read(r3.get_dataset("gz")[0:1])
    r2.close(wait=True)
    alone._reader.close(wait=True)


def test_dataset_unpickled_into_a_reader_already_open(fn, truth):
    """Unpickling a dataset with memo into a reader that has opened (a
    second loads of the same bytes gives a new Reader, so only copy's memo
    can reach here): the proxy is opened at once."""
    import copy
    r = multiload.Reader(fn, n_procs=1)
    r2 = pickle.loads(pickle.dumps(r))
    r2.stats()  # opens it
    ds = r.get_dataset("contig")
    memo = {id(r): r2}
    ds2 = copy.deepcopy(ds, memo)
    assert ds2._reader is r2 and ds2._layout is not None
    assert np.array_equal(r2.read(ds2[10:20]), truth["contig"][10:20])
    r.close(wait=True)
    r2.close(wait=True)


def test_live_objects_refuse_to_pickle(fn):
    s = multiload.Streamer(fn)
    r = multiload.Reader(fn, n_procs=1)
    ds = r.get_dataset("gz")
    st = ds.create_stage(4)
    with s.get_queue("gz", n_procs=1, block_size=64) as q:
        g = q.get(timeout=rf.GET_TIMEOUT)
        req = r.request(ds[0:4], st)
        cases = [(q, "Streamer"), (g, "numpy.array(block)"), (req, "request.get()"), (st, "create_stage"),
                 (ds.create_stage_pool(4, 2), "create_stage_pool")]
        for obj, instead in cases:
            with pytest.raises(TypeError, match=f"cannot pickle a multiload {type(obj).__name__}") as e:
                pickle.dumps(obj)
            assert instead in str(e.value)
        # a block's view pickles as its bytes (numpy copies them)
        with g as block:
            assert np.array_equal(pickle.loads(pickle.dumps(block)), block)
        req.get()
    r.close(wait=True)


# -------------------------------------------------------- the file changed

def _described_then(fn, change, tmp_path):
    """Copy fn, describe a Streamer, a Reader and a dataset of it, apply
    ``change`` to the copy, and return (copy, original handles, pickles)."""
    path = str(tmp_path / "copy.h5")
    with open(fn, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    s, r = multiload.Streamer(path), multiload.Reader(path, n_procs=1)
    ds = r.get_dataset("contig")
    blobs = [pickle.dumps(s), pickle.dumps(r), pickle.dumps(ds)]
    change(path)
    return path, (s, r, ds), blobs


def _touch(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _grow(path):
    st = os.stat(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 512)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same time: only the size tells


def _rewrite(path):  # regenerated and renamed over it (the original still reads the old file)
    with h5py.File(path + ".new", "w") as f:
        f["contig"] = np.zeros((5, COLS), "<i4")
    os.replace(path + ".new", path)


@pytest.mark.parametrize("change,words", [(_touch, "modified"), (_grow, "size"), (_rewrite, "size")])
def test_changed_file_is_refused_at_first_use(fn, truth, tmp_path, change, words):
    path, (s, r, ds), blobs = _described_then(fn, change, tmp_path)
    s2, r2, ds2 = (pickle.loads(b) for b in blobs)  # unpickling never raises for the file
    uses = [lambda: s2.get_queue("contig"), lambda: s2.get_remainder("contig", 7),
            lambda: r2.get_dataset("contig"), lambda: r2.stats(), lambda: ds2._reader.read(ds2[0:2])]
    for use in uses:
        with pytest.raises(multiload.FileChangedError) as e:
            use()
        assert isinstance(e.value, OSError) and e.value.errno == errno.ESTALE and e.value.filename == path
        assert words in str(e.value) and repr(path) in str(e.value) and "make a new" in str(e.value)
    if change is _touch:  # the originals keep reading the file they opened (the same bytes)
        assert np.array_equal(r.read(ds[0:5]), truth["contig"][:5])
        assert np.array_equal(pw.stream_all(s, "contig", 1000), truth["contig"])
    r.close(wait=True)


def test_deleted_file_is_file_not_found(fn, tmp_path):
    path, (s, r, ds), blobs = _described_then(fn, os.remove, tmp_path)
    with pytest.raises(FileNotFoundError):
        pickle.loads(blobs[2])._reader.read(pickle.loads(blobs[2])[0:1])
    with pytest.raises(FileNotFoundError):
        pickle.loads(blobs[0]).get_queue("contig")
    r.close(wait=True)


def test_changed_dataset_under_the_same_identity_is_refused(tmp_path):
    """A file replaced by one of the same size and time (a crafted case)
    whose dataset has another shape: the reopened dataset is checked too."""
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    with h5py.File(a, "w") as f:
        f["x"] = np.arange(400, dtype="<i4").reshape(100, 4)
    with h5py.File(b, "w") as f:
        f["x"] = np.arange(400, dtype="<i4").reshape(200, 2)
    if os.path.getsize(a) != os.path.getsize(b):
        pytest.skip("h5py wrote files of different sizes")
    r = multiload.Reader(a, n_procs=1)
    blob = pickle.dumps(r.get_dataset("x"))
    r.close(wait=True)
    st = os.stat(a)
    os.replace(b, a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    ds = pickle.loads(blob)
    with pytest.raises(multiload.FileChangedError, match=r"dataset 'x' .* shape \(100, 4\).* now .*\(200, 2\)"):
        ds._reader.read(ds[0:1])


# ------------------------------------------------------ worker processes

def _pool_tasks():
    return [("range", "gz", 0, 1000), ("range", "gz", 1000, N), ("coords", "contig", [2999, 7, 7, 1234, 0]),
            ("column", "table", "a", 100, 2500), ("vl", "vl", [49, 0, 6, 6, 13]),
            ("stream", "contig", 256), ("stream", "gz", 300), ("local",)]


def _check_pool_results(truth, tasks, results, parent_core=None):
    want = {("range", "gz", 0, 1000): truth["gz"][:1000], ("range", "gz", 1000, N): truth["gz"][1000:],
            ("stream", "contig", 256): truth["contig"], ("stream", "gz", 300): truth["gz"]}
    for task, (pid, got) in zip(tasks, results):
        assert pid != os.getpid()
        what = task[0]
        if what == "coords":
            exp = truth["contig"][task[2]]
        elif what == "column":
            exp = truth["table"][task[2]][task[3]:task[4]]
        elif what == "vl":
            exp = vl_rows(truth, task[2])
        elif what == "local":  # the worker opened the reader itself (fork: not the parent's core)
            local_pid, core_id = got
            assert local_pid == pid and core_id != parent_core
            continue
        else:
            exp = want[task]
        assert got.dtype == exp.dtype and got.shape == exp.shape and np.array_equal(got, exp), task


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_workers_read_through_handles(fn, truth, method):
    """A Pool's workers read through a Reader, its datasets and a Streamer
    made and used in the parent: inherited under fork (the pid check
    reopens them), unpickled under spawn and forkserver."""
    r = multiload.Reader(fn, n_procs=2)
    handles = {"reader": r, "streamer": multiload.Streamer(fn)}
    handles.update((n, r.get_dataset(n)) for n in ("contig", "gz", "table", "vl"))
    assert np.array_equal(r.read(handles["gz"][0:3]), truth["gz"][:3])  # used here first
    with handles["streamer"].get_queue("contig", n_procs=1) as q:
        q.get(timeout=rf.GET_TIMEOUT).release()
    tasks = _pool_tasks()
    ctx = mp.get_context(method)
    with ctx.Pool(2, initializer=pw.init, initargs=(handles,)) as pool:
        assert {f for _, f in pool.map(pw.whoami, range(2))} == {multiload.__file__}
        results = pool.map(pw.run, tasks, chunksize=1)
        # a dataset pickled in the task itself (its own Reader in the worker)
        given = pool.map(pw.run, [("given", handles["table"], 5, 60)])
        pool.close()
        pool.join()
    # (an id means something across processes only when the worker is a fork of this one)
    _check_pool_results(truth, tasks, results, id(r._core) if method == "fork" else None)
    assert np.array_equal(given[0][1], truth["table"][5:60])
    r.close(wait=True)


def test_pool_worker_sees_a_changed_file(fn, tmp_path):
    path, (s, r, ds), _ = _described_then(fn, lambda p: None, tmp_path)
    _touch(path)
    with mp.get_context("fork").Pool(1) as pool:
        with pytest.raises(multiload.FileChangedError, match="modified") as e:
            pool.map(pw.run, [("given", ds, 0, 10)])
    assert e.value.errno == errno.ESTALE and e.value.filename == path
    r.close(wait=True)


# ------------------------------------------------------- fork in a script

FORK_SCRIPT = r"""
import os, sys, threading, pickle, numpy as np, h5py
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests"))
import multiload
from multiload import _handle
import pickle_workers as pw
fn = os.environ["FN"]
with h5py.File(fn, "r") as f:
    gz, contig = f["gz"][...], f["contig"][...]

def child(body):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            import traceback; traceback.print_exc(); sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)

def on_done(fut):  # notify is part of a Reader's description: a picklable function
    pass
r = multiload.Reader(fn, n_procs=2, notify=on_done)
ds = r.get_dataset("gz")
st = ds.create_stage(10)
assert np.array_equal(r.request(ds[5:15], st).get(), gz[5:15])
s = multiload.Streamer(fn)
q = s.get_queue("contig", n_procs=2, block_size=100, ordered=True)
g = q.get(timeout=20)
parent_core = r._core

def uses_parents_handles():
    # the parent's queue is the parent's: a clear error, as before
    try:
        q.get(timeout=5)
        raise AssertionError("the parent's queue worked in the child")
    except RuntimeError as e:
        assert "another process" in str(e), e
    # the Reader and its dataset reopen here, lazily (pid check)
    assert r._local_pid == os.getppid()
    got = r.request(ds[100:110], st).get()
    assert np.array_equal(got, gz[100:110])
    assert r._local_pid == os.getpid() and r._core is not parent_core
    assert ds._layout is not None and np.array_equal(r.read(ds[[2999, 3]]), gz[[2999, 3]])
    # the Streamer too: its own queues here
    assert np.array_equal(pw.stream_all(s, "contig", 128), contig)
    assert np.array_equal(pw.stream_all(s, "gz", 500), gz)
    # pickled in the child, used in the child
    r2 = pickle.loads(pickle.dumps(r))
    assert np.array_equal(r2.read(r2.get_dataset("contig")[7:9]), contig[7:9])
    r.close(wait=True)
    r2.close(wait=True)

assert child(uses_parents_handles) == 0

# a fork while another thread holds the handles' lock: the child has its own
held, release = threading.Event(), threading.Event()
def hold():
    with _handle._lock:
        held.set()
        release.wait(30)
t = threading.Thread(target=hold)
t.start()
held.wait(10)
r_unopened = pickle.loads(pickle.dumps(r))
def opens_despite_the_lock():
    assert np.array_equal(r_unopened.read(r_unopened.get_dataset("gz")[0:4]), gz[0:4])
assert child(opens_despite_the_lock) == 0
release.set()
t.join(10)

# the child sees the file changed (by the child itself): the child's copy
# refuses; the original, in the parent, keeps working
def file_changed_in_child():
    st_ = os.stat(fn)
    os.utime(fn, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    for use in (lambda: r.read(ds[0:1]), lambda: s.get_queue("gz")):
        try:
            use()
            raise AssertionError("a changed file was read")
        except multiload.FileChangedError as e:
            assert "modified" in str(e), e
assert child(file_changed_in_child) == 0
assert np.array_equal(r.request(ds[20:30], st).get(), gz[20:30])
g.release()
blocks = []
for guard in q:
    with guard as b:
        blocks.append(np.array(b))
assert np.array_equal(np.concatenate(blocks), contig[100:])
q.close()
r.close(wait=True)
print("OK")
"""


def test_handles_used_in_the_parent_reopen_in_a_forked_child(fn, tmp_path):
    path = str(tmp_path / "fork.h5")
    write_file(path)
    out = rf.run_python(FORK_SCRIPT, timeout=90, env={"ROOT": rf.ROOT, "FN": path})
    assert out.returncode == 0, (out.stdout, out.stderr[-3000:])
    assert out.stdout.strip().endswith("OK")


# ---------------------------------------------------- torch's DataLoader

@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_dataloader_workers(fn, truth, method):
    torch = pytest.importorskip("torch")
    r = multiload.Reader(fn, n_procs=2)
    ds = r.get_dataset("gz")
    assert np.array_equal(r.read(ds[0:2]), truth["gz"][:2])  # used in the parent first
    data = pw.RowDataset(r, ds)
    g = torch.Generator().manual_seed(3)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, generator=g, num_workers=2,
                                         multiprocessing_context=method)
    seen = []
    for idx, rows in loader:
        idx = idx.numpy()
        assert np.array_equal(rows.numpy(), truth["gz"][idx])
        seen.append(idx)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(N))
    r.close(wait=True)
