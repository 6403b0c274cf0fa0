"""multiload.FileLoader across processes: a loader process (spawn and
forkserver) serving several spawned worker processes that take their
contexts as arguments; a forked child using an inherited context; the
loader killed with SIGKILL (wait_get raises within a bounded time); Ctrl-C
in a waiting worker; nothing left behind (process, /dev/shm file, mapping)
after close, or after the process that made the loader dies.
"""

import gc
import hashlib
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import multiload

ROOT = Path(__file__).resolve().parent.parent
MAXF = 32 * 1024

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("proc")
    rng = random.Random(5)
    out = []
    for i in range(600):
        size = 0 if i == 0 else MAXF if i == 1 else rng.randrange(MAXF + 1)
        p = d / f"f{i:04d}"
        p.write_bytes(rng.randbytes(size))
        out.append(str(p))
    return out


def consume(worker, paths, q):
    """A worker process: read its paths through the loader, compare with the disk."""
    bad, n, pending, todo = [], 0, 0, list(paths)
    while todo or pending:
        while todo and worker.request(todo[-1]):
            todo.pop()
            pending += 1
        with worker.wait_get(timeout=60) as e:
            with open(e.get_filepath(), "rb") as f:
                if e.get_data() != f.read() or bytes(e.view()) != e.get_data():
                    bad.append(e.get_filepath())
            n += 1
        pending -= 1
    q.put((worker.id, n, bad))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purposes only once reaped
        return f.read().split(") ")[-1][0] != "Z"


def wait_gone(pid, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def shm():
    """/dev/shm's names, without the semaphores of the tests' own multiprocessing queues."""
    names = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    return {n for n in names if not n.startswith("sem.mp-")}


def maps_count():
    gc.collect()
    with open("/proc/self/maps") as f:
        return sum("multiload-files" in line for line in f)


@pytest.mark.parametrize("start_method,n_workers", [("spawn", 3), ("forkserver", 1)])
def test_worker_processes_on_one_loader_process(files, start_method, n_workers):
    shm0, maps0 = shm(), maps_count()
    loader = multiload.FileLoader(8, MAXF, n_workers, n_threads=2)
    pid = loader.spawn_loader(start_method=start_method)
    assert pid != os.getpid() and alive(pid)
    assert loader.stats()["server_pid"] == pid
    time.sleep(1.2)  # past the loader's first look at its parent (a forkserver child's ppid is the server)
    assert loader.stats()["serving"] and alive(pid)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=consume, args=(loader.get_worker_context(i), files[i::n_workers], q))
             for i in range(n_workers)]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert [(w, n) for w, n, _ in results] == [(i, len(files[i::n_workers])) for i in range(n_workers)]
    assert all(not bad for _, _, bad in results)
    st = loader.stats()
    assert st["completed"] == len(files) and st["failed"] == 0 and st["unreleased"] == 0
    loader.close()
    assert not alive(pid)
    assert loader.stats()["closed"] and not loader.stats()["serving"]
    del loader, procs
    assert maps_count() == maps0 and shm() == shm0


def test_forked_child_uses_inherited_context(files):
    with multiload.FileLoader(4, MAXF, 2, n_threads=1).start() as loader:
        w = loader.get_worker_context(1)
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's outcome is its exit code
            ok = False
            try:
                assert w.request(files[7])
                with w.wait_get(timeout=30) as e:
                    ok = e.get_data() == Path(files[7]).read_bytes()
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        w0 = loader.get_worker_context(0)  # the parent carries on
        assert w0.request(files[8])
        with w0.wait_get(timeout=30) as e:
            assert e.get_data() == Path(files[8]).read_bytes()


def test_loader_killed_wait_get_raises(files, monkeypatch):
    # Every read of the loader process takes 3 s longer, so a request is in
    # flight when the process dies.
    monkeypatch.setenv("MULTILOAD_FAULTS", "slow~1:3000")
    loader = multiload.FileLoader(2, MAXF, 1, n_threads=1)
    pid = loader.spawn_loader()
    monkeypatch.delenv("MULTILOAD_FAULTS")
    w = loader.get_worker_context(0)
    assert w.request(files[3])
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(multiload.LoaderDiedError, match="died"):  # a RuntimeError, as LoaderProcess raises
        w.wait_get()
    assert time.monotonic() - t0 < 5  # said within ~0.1 s; generous bound
    with pytest.raises(RuntimeError, match="died"):
        w.try_get()
    st = loader.stats()
    assert st["server_dead"] and st["in_flight"] == 1
    loader.close()  # always completes
    assert not alive(pid)


CTRL_C = r"""
import sys, time
import multiload
loader = multiload.FileLoader(2, 4096, 1, serve_timeout=600)  # never served: wait_get only sleeps
w = loader.get_worker_context(0)
assert w.request(sys.argv[1])
print("waiting", flush=True)
t0 = time.monotonic()
try:
    w.wait_get()
except KeyboardInterrupt:
    print("interrupted after %.2f s" % (time.monotonic() - t0), flush=True)
loader.close()
print("closed", flush=True)
"""


def test_ctrl_c_interrupts_wait_get(files):
    p = subprocess.Popen([sys.executable, "-c", CTRL_C, files[0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))))
    try:
        assert p.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "interrupted" in out and "closed" in out


ORPHAN = r"""
import os, signal, sys
import multiload
if __name__ == "__main__":
    loader = multiload.FileLoader(2, 4096, 1, n_threads=1)
    print(loader.spawn_loader(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # dies without close()
"""


def test_loader_process_leaves_when_its_parent_dies(tmp_path):
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))))
    assert r.returncode == -signal.SIGKILL, r.stderr
    pid = int(r.stdout.split()[0])
    assert wait_gone(pid, timeout=15), f"loader process {pid} outlived its parent"


def _become(loader):
    loader.become_loader()


def test_become_loader_in_another_process(files):
    loader = multiload.FileLoader(4, MAXF, 1, n_threads=1, serve_timeout=60)
    w = loader.get_worker_context(0)
    assert w.request(files[5])  # queued before anyone serves: waits for the server
    p = mp.get_context("spawn").Process(target=_become, args=(loader,))
    p.start()
    with w.wait_get(timeout=60) as e:
        assert e.get_data() == Path(files[5]).read_bytes()
    assert loader.stats()["server_pid"] == p.pid
    loader.close()  # the other process sees the close and returns from become_loader
    p.join(30)
    assert p.exitcode == 0


def _checksum_worker(worker, paths, q):
    h = hashlib.sha256()
    for p in paths:
        assert worker.request(p, timeout=60)
        with worker.wait_get(timeout=60) as e:
            h.update(e.view())
    q.put(h.hexdigest())


@pytest.mark.slow
def test_many_cycles_leave_nothing(files):
    shm0, maps0 = shm(), maps_count()
    ctx = mp.get_context("spawn")
    for cycle in range(5):
        loader = multiload.FileLoader(4, MAXF, 1, n_threads=1)
        pid = loader.spawn_loader()
        q = ctx.Queue()
        paths = files[cycle * 50:(cycle + 1) * 50]
        p = ctx.Process(target=_checksum_worker, args=(loader.get_worker_context(0), paths, q))
        p.start()
        want = hashlib.sha256(b"".join(Path(x).read_bytes() for x in paths)).hexdigest()
        assert q.get(timeout=60) == want
        p.join(30)
        loader.close()
        assert not alive(pid)
    del loader
    assert maps_count() == maps0 and shm() == shm0
