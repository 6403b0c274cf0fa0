"""multiload.FileLoader in one process: whole files read back byte-exact
(the truth is the bytes written to disk), in both I/O engines and with
O_DIRECT; every failure kind on its entry as OSError naming path and errno;
long paths; back-pressure; the waits that could never end; close with
requests in flight; views that outlive release and close; no mapping left.
"""

import errno
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import multiload
from multiload import _core

ROOT = Path(__file__).resolve().parent.parent
MAXF = 64 * 1024 + 123  # not a multiple of 4 KiB: the slot is rounded up, the limit is not

pytestmark = pytest.mark.timeout(120)


def write_files(d, n, seed, max_size=MAXF):
    """n files of random sizes (0 and exactly max_size among them) -> {path: bytes}."""
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        size = 0 if i == 0 else max_size if i == 1 else rng.randrange(max_size + 1)
        p = os.path.join(d, f"f{i:05d}.bin")
        data = rng.randbytes(size)
        with open(p, "wb") as f:
            f.write(data)
        out[p] = data
    return out


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    return write_files(str(d), 2500, 1)


def read_all(loader, paths, n_workers, check):
    """Request every path through n_workers contexts (round robin), with
    back-pressure; check(entry) each completed entry. Returns the paths seen."""
    workers = [loader.get_worker_context(i) for i in range(n_workers)]
    todo = [paths[i::n_workers] for i in range(n_workers)]
    seen = []
    pending = [0] * n_workers
    while any(todo) or any(pending):
        for w, worker in enumerate(workers):
            while todo[w] and worker.request(todo[w][-1]):
                todo[w].pop()
                pending[w] += 1
            if pending[w]:
                with worker.wait_get(timeout=30) as e:
                    check(e)
                    seen.append(e.get_filepath())
                pending[w] -= 1
    return seen


def maps_count(tag="multiload-files"):
    gc.collect()  # earlier tests' objects, so the count is this test's
    with open("/proc/self/maps") as f:
        return sum(tag in line for line in f)


@pytest.mark.parametrize("io_mode", ["io_uring", "pread"])
def test_roundtrip_random_sizes(many, io_mode):
    paths = sorted(many)
    with multiload.FileLoader(16, MAXF, 2, n_threads=2, io_mode=io_mode) as loader:
        loader.start()
        if io_mode == "pread" or _core.default_io_mode() == "io_uring":
            assert loader.io_engine == io_mode

        def check(e):
            want = many[e.get_filepath()]
            assert e.ok and e.size == len(want)
            assert e.get_data() == want
            assert bytes(e.view()) == want
            assert e.array.dtype == np.uint8 and e.array.tobytes() == want

        seen = read_all(loader, paths, 2, check)
        assert sorted(seen) == paths
        st = loader.stats()
        assert st["completed"] == st["requested"] == len(paths)
        assert st["failed"] == 0 and st["bytes"] == sum(map(len, many.values()))
        assert st["in_flight"] == st["ready"] == st["unreleased"] == 0


def test_multiload_io_env_forces_pread(many, monkeypatch):
    monkeypatch.setenv("MULTILOAD_IO", "pread")
    paths = sorted(many)[:300]
    with multiload.FileLoader(8, MAXF, 1, n_threads=2) as loader:
        loader.start()
        assert loader.io_engine == "pread"
        seen = read_all(loader, paths, 1, lambda e: (e.get_data() == many[e.get_filepath()]) or pytest.fail("bytes"))
        assert sorted(seen) == paths


def test_direct_reads_exact(many):
    paths = sorted(many)[:400]
    with multiload.FileLoader(8, MAXF, 1, n_threads=2, direct=True) as loader:
        loader.start()
        sizes = {}

        def check(e):
            assert e.get_data() == many[e.get_filepath()]
            sizes[e.get_filepath()] = e.size

        read_all(loader, paths, 1, check)
        assert sizes == {p: len(many[p]) for p in paths}
        # a filesystem that refuses O_DIRECT (tmpfs) has every file read buffered, and counted
        assert loader.stats()["direct_fallbacks"] in (0, len(paths))


def one(loader, path, worker=0):
    w = loader.get_worker_context(worker)
    assert w.request(path)
    return w.wait_get(timeout=30)


@pytest.fixture
def served():
    loader = multiload.FileLoader(4, 4096, 2, n_threads=1).start()
    yield loader
    loader.close()


def test_missing_file(served, tmp_path):
    p = str(tmp_path / "nope")
    with one(served, p) as e:
        assert not e.ok and e.size == 0
        with pytest.raises(FileNotFoundError) as ei:
            e.get_data()
        assert ei.value.errno == errno.ENOENT and ei.value.filename == p
        with pytest.raises(FileNotFoundError):
            e.view()
        with pytest.raises(FileNotFoundError):
            e.array
        assert isinstance(e.error, FileNotFoundError)
    assert served.stats()["failed"] == 1


def test_directory(served, tmp_path):
    with one(served, str(tmp_path)) as e:
        with pytest.raises(IsADirectoryError) as ei:
            e.get_data()
        assert ei.value.errno == errno.EISDIR and ei.value.filename == str(tmp_path)


def test_too_large_names_size_and_limit(served, tmp_path):
    p = tmp_path / "big"
    p.write_bytes(b"x" * 5000)
    (tmp_path / "edge").write_bytes(b"y" * 4096)
    with one(served, str(p)) as e:
        with pytest.raises(OSError) as ei:
            e.get_data()
        assert ei.value.errno == errno.EFBIG and ei.value.filename == str(p)
        assert "5000" in str(ei.value) and "4096" in str(ei.value)
    with one(served, str(tmp_path / "edge")) as e:  # exactly the limit
        assert e.get_data() == b"y" * 4096


def test_empty_file(served, tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    with one(served, p) as e:  # a PathLike works too
        assert e.ok and e.get_data() == b"" and e.array.size == 0 and bytes(e.view()) == b""
        assert e.get_filepath() == str(p)  # os.fspath of what was requested


def test_fifo_is_refused_not_waited_for(served, tmp_path):
    p = tmp_path / "fifo"
    os.mkfifo(p)
    with one(served, str(p)) as e:
        with pytest.raises(OSError) as ei:
            e.get_data()
        assert ei.value.errno == errno.EINVAL and "regular file" in str(ei.value)


def test_file_shorter_than_its_size_fails_with_eio(served):
    # sysfs attributes say 4096 bytes and hold fewer: the read ends before
    # the fstat size, exactly what a file that shrank while read looks like.
    p = "/sys/kernel/mm/transparent_hugepage/enabled"
    if not os.path.exists(p) or os.stat(p).st_size <= len(open(p, "rb").read()):
        pytest.skip("no sysfs attribute whose size overstates its content")
    with one(served, p) as e:
        with pytest.raises(OSError) as ei:
            e.get_data()
        assert ei.value.errno == errno.EIO and "shrank" in str(ei.value)


def test_read_error_eio_injected(tmp_path, monkeypatch):
    (tmp_path / "a").write_bytes(b"a" * 3000)
    (tmp_path / "b").write_bytes(b"b" * 3000)
    monkeypatch.setenv("MULTILOAD_FAULTS", "eio@1")
    _core.fault_reload()
    try:
        for io_mode in ("io_uring", "pread"):
            _core.fault_reload()
            with multiload.FileLoader(2, 4096, 1, n_threads=1, io_mode=io_mode).start() as loader:
                with one(loader, str(tmp_path / "a")) as e:
                    with pytest.raises(OSError) as ei:
                        e.get_data()
                    assert ei.value.errno == errno.EIO and ei.value.filename == str(tmp_path / "a")
                with one(loader, str(tmp_path / "b")) as e:  # the next read succeeds: never retried forever
                    assert e.get_data() == b"b" * 3000
    finally:
        monkeypatch.delenv("MULTILOAD_FAULTS")
        _core.fault_reload()


PERMISSION_SCRIPT = r"""
import json, os, sys
import multiload
d = sys.argv[1]
os.setgid(65534); os.setuid(65534)
out = {}
with multiload.FileLoader(2, 4096, 1, n_threads=1).start() as loader:
    w = loader.get_worker_context(0)
    for name in ("secret", "public"):
        assert w.request(os.path.join(d, name))
        with w.wait_get(timeout=30) as e:
            try:
                out[name] = e.get_data().decode()
            except OSError as x:
                out[name] = [type(x).__name__, x.errno, x.filename]
print(json.dumps(out))
"""


def test_permission_denied():
    # Root reads everything, so the loader drops to nobody in a subprocess.
    d = tempfile.mkdtemp(dir="/tmp")
    try:
        os.chmod(d, 0o755)
        with open(os.path.join(d, "secret"), "w") as f:
            f.write("hidden")
        os.chmod(os.path.join(d, "secret"), 0)
        with open(os.path.join(d, "public"), "w") as f:
            f.write("shown")
        os.chmod(os.path.join(d, "public"), 0o644)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])))
        r = subprocess.run([sys.executable, "-c", PERMISSION_SCRIPT, d], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["secret"] == ["PermissionError", errno.EACCES, os.path.join(d, "secret")]
        assert out["public"] == "shown"
    finally:
        for n in ("secret", "public"):
            try:
                os.unlink(os.path.join(d, n))
            except FileNotFoundError:
                pass
        os.rmdir(d)


def test_long_paths(served, tmp_path):
    # > 128 characters (AsyncLoader's limit), then close to PATH_MAX, then past it.
    d = str(tmp_path)
    while len(d) < 300:
        d = os.path.join(d, "d" * 100)
    os.makedirs(d)
    p = os.path.join(d, "file-with-a-long-path.bin")
    with open(p, "wb") as f:
        f.write(b"long" * 100)
    assert len(p) > 128
    with one(served, p) as e:
        assert e.get_filepath() == p and e.get_data() == b"long" * 100
    deep = str(tmp_path)
    while len(deep) < 3900:
        deep = os.path.join(deep, "e" * 200)
    os.makedirs(deep)
    q = os.path.join(deep, "x")
    with open(q, "wb") as f:
        f.write(b"deep")
    assert 3900 < len(q) < 4095
    with one(served, q) as e:
        assert e.get_filepath() == q and e.get_data() == b"deep"
    too_long = os.path.join(deep, "z" * 250)
    assert len(too_long.encode()) >= 4096
    with one(served, too_long) as e:
        with pytest.raises(OSError) as ei:
            e.get_data()
        assert ei.value.errno == errno.ENAMETOOLONG and ei.value.filename == too_long
    with pytest.raises(ValueError):
        served.get_worker_context(0).request(p + "\0x")  # as open() refuses it
    with one(served, p.encode()) as e:  # bytes paths come back as bytes
        assert e.get_filepath() == p.encode()


def test_back_pressure_and_blocking_request(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"z" * 100)
    loader = multiload.FileLoader(3, 4096, 1, n_threads=1, serve_timeout=60)
    w = loader.get_worker_context(0)
    assert [w.request(p) for _ in range(3)] == [True] * 3
    assert w.request(p) is False  # every entry in use: back-pressure
    t0 = time.monotonic()
    assert w.request(p, timeout=0.2) is False
    with pytest.raises(TimeoutError):
        w.wait_get(timeout=0.2)
    assert w.try_get() is None
    assert time.monotonic() - t0 < 10
    loader.start()
    entries = [w.wait_get(timeout=30) for _ in range(3)]
    assert all(e.get_data() == b"z" * 100 for e in entries)
    with pytest.raises(RuntimeError, match="only this thread"):
        w.request(p, timeout=None)  # every entry is held by this thread: would never end
    threading.Timer(0.2, entries[0].release).start()
    assert w.request(p, timeout=30) is True  # woken by a release in another thread
    entries[0].release()  # twice: a no-op
    entries[1].release()
    with w.wait_get(timeout=30) as e:
        assert e.get_data() == b"z" * 100
    assert loader.stats()["unreleased"] == 1
    loader.close()
    assert loader.stats()["unreleased"] == 1  # reported after close, too
    entries[2].release()


def test_wait_get_with_nothing_requested_raises():
    with multiload.FileLoader(2, 4096, 1, n_threads=1).start() as loader:
        w = loader.get_worker_context(0)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="nothing requested"):
            w.wait_get()
        assert time.monotonic() - t0 < 10


def test_nobody_serves_after_grace(tmp_path):
    (tmp_path / "f").write_bytes(b"1")
    with multiload.FileLoader(2, 4096, 1, serve_timeout=0.3) as loader:
        w = loader.get_worker_context(0)
        assert w.request(tmp_path / "f")
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="nobody serves"):
            w.wait_get()
        assert time.monotonic() - t0 < 10


def test_close_with_requests_in_flight(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1 << 20))
    loader = multiload.FileLoader(64, 1 << 20, 2, n_threads=2).start()
    ws = [loader.get_worker_context(i) for i in range(2)]
    for w in ws:
        while w.request(big):
            pass
    held = ws[0].wait_get(timeout=30)
    results = []
    waiter_worker = multiload.FileLoader(1, 4096, 1, serve_timeout=60)  # never served: its wait only ends by close
    ww = waiter_worker.get_worker_context(0)
    assert ww.request(big)
    th = threading.Thread(target=lambda: results.append(ww.wait_get()))
    th.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    loader.close()
    waiter_worker.close()
    th.join(30)
    assert not th.is_alive() and results == [multiload.QueueClosed]
    assert time.monotonic() - t0 < 30
    st = loader.stats()
    assert st["closed"] and not st["serving"] and st["unreleased"] == 1
    assert st["completed"] + st["in_flight"] + 0 <= st["requested"] + st["completed"]
    assert ws[0].try_get() is multiload.QueueClosed
    assert ws[1].wait_get() is multiload.QueueClosed
    with pytest.raises(RuntimeError, match="closed"):
        ws[0].request(big)
    with pytest.raises(RuntimeError, match="closed"):
        loader.start()
    loader.close()  # idempotent
    assert held.get_data()[:16] == big.read_bytes()[:16]  # taken before close: still readable
    held.release()


def test_views_outlive_release_and_close(tmp_path):
    p = tmp_path / "v"
    data = os.urandom(10000)
    p.write_bytes(data)
    before = maps_count()
    loader = multiload.FileLoader(2, 16384, 1, n_threads=1).start()
    assert maps_count() == before + 1
    e = one(loader, p)
    mv, arr = e.view(), e.array
    e.release()
    with pytest.raises(RuntimeError, match="released"):
        e.get_data()
    with pytest.raises(RuntimeError, match="released"):
        e.array
    loader.close()
    del e, loader
    gc.collect()
    # the views still hold the mapping: reading them never faults
    assert bytes(mv) == data and arr.tobytes() == data
    del mv, arr
    gc.collect()
    assert maps_count() == before  # nothing left mapped


def test_no_mapping_left_after_close(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    before = maps_count()
    for _ in range(20):
        with multiload.FileLoader(4, 4096, 2, n_threads=2).start() as loader:
            with one(loader, tmp_path / "f") as e:
                assert e.get_data() == b"abc"
            e2 = one(loader, tmp_path / "f", worker=1)  # dropped without release
            del e2
    del loader, e
    gc.collect()
    assert maps_count() == before
    assert not [t for t in threading.enumerate() if t is not threading.main_thread() and t.daemon is False
                and t.name.startswith("multiload")]


def test_bad_arguments():
    with pytest.raises(ValueError):
        multiload.FileLoader(0, 10, 1)
    with pytest.raises(ValueError):
        multiload.FileLoader(4, -1, 1)
    with pytest.raises(ValueError):
        multiload.FileLoader(4, 10, 0)
    with pytest.raises(ValueError):
        multiload.FileLoader(4, 10, 1, dispatch_n=1000)
    with pytest.raises(ValueError):
        multiload.FileLoader(4, 10, 1, io_mode="nope")
    with pytest.raises(ValueError):
        multiload.FileLoader(1 << 20, 1 << 40, 1 << 16)  # cannot fit
    loader = multiload.FileLoader(4, 10, 2, dispatch_n=4, max_idle_iters=100)  # AsyncLoader's keywords
    with pytest.raises(ValueError):
        loader.get_worker_context(2)
    with pytest.raises(ValueError):
        loader.get_worker_context(-1)
    w = loader.get_worker_context(1)
    with pytest.raises(ValueError):
        w.wait_get(timeout=-1)
    with pytest.raises(TypeError):
        w.request(12)
    loader.start()
    with pytest.raises(RuntimeError, match="already served"):
        loader.start()
    with pytest.raises(ValueError, match="never 'fork'"):
        loader.spawn_loader(start_method="fork")
    with pytest.raises(TypeError):
        multiload.file_loader.Entry()
    loader.close()
    with pytest.raises(ValueError):
        _core.FileRegion.attach(os.open("/dev/null", os.O_RDONLY))


def test_threads_share_a_worker(many):
    # Several consumer threads on one context: each entry handed out once.
    paths = sorted(many)[:600]
    with multiload.FileLoader(16, MAXF, 1, n_threads=2).start() as loader:
        w = loader.get_worker_context(0)
        got, lock, errors = [], threading.Lock(), []

        def consume():
            while True:
                e = w.wait_get(timeout=30)
                if not e:
                    return
                with e:
                    if e.get_data() != many[e.get_filepath()]:
                        errors.append(e.get_filepath())
                    with lock:
                        got.append(e.get_filepath())

        ths = [threading.Thread(target=consume) for _ in range(3)]
        for t in ths:
            t.start()
        for p in paths:
            assert w.request(p, timeout=30)
        deadline = time.monotonic() + 60
        while len(got) < len(paths) and time.monotonic() < deadline:
            time.sleep(0.01)
        loader.close()
        for t in ths:
            t.join(30)
        assert sorted(got) == paths and not errors
