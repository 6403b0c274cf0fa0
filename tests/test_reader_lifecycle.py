"""The Reader's futures and shutdown when reads are slow or never return:
stop() and close(wait=False) return promptly and fail what is not done,
dropping a future never blocks (and never frees memory a worker writes),
result()/exception() keep their timeout, Ctrl-C interrupts a wait, and
futures work with concurrent.futures and asyncio. Every read is slowed
by fault injection (MULTILOAD_FAULTS=slow~1:MS); bounds are generous
"returns within N s" checks shorter than one slowed read -- they show a
call did not wait for the read, and are not timings."""

import asyncio
import concurrent.futures
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import weakref

import numpy as np
import pytest

import multiload
import reliability_files as rf
from reliability_files import IO_MODES, faults

pytestmark = pytest.mark.timeout(120)

#: One slowed read, in ms, and a bound well under it for calls that must
#: not wait for a read (stop() itself waits up to 0.5 s).
SLOW_MS = 3000
BOUND = 2.0


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return rf.write_data_file(str(tmp_path_factory.mktemp("reader_lifecycle") / "data.h5"))


@pytest.fixture(autouse=True)
def no_thread_left():
    """Every worker has exited when a test ends (a stopped reader's worker
    finishes its read in the background; faults() ends the slowness)."""
    before = rf.n_threads()
    yield
    for _ in range(400):
        gc.collect()
        if rf.n_threads() <= before:
            break
        time.sleep(0.05)
    assert rf.n_threads() <= before, "reader threads still running 20 s after the test"


def in_thread(fn, *args):
    out = {}

    def run():
        t0 = time.monotonic()
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e
        out["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def returns_within(fn, seconds, *args):
    """Run fn(*args) in a thread; its result dict once it returned within
    `seconds` (else the test fails: it waited for a read)."""
    t, out = in_thread(fn, *args)
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} did not return within {seconds} s"
    return out


def wait_running(fut):
    for _ in range(1000):
        if fut.running():
            return
        time.sleep(0.005)
    raise AssertionError("no worker started the request")


def truth():
    return rf.values()


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_stop_returns_promptly_and_fails_what_is_not_done(data_file, io_mode):
    """n_procs=1, 10 small requests: the worker is inside its first (slow)
    read, with io_uring the next ones taken into its batch. stop() returns
    without waiting for the read, every future raises QueueClosedException
    at once (none is read after the stop), and the stage of the request
    being read stays busy until its read is over, then is free again."""
    with faults(f"slow~1:{SLOW_MS}"):
        r = multiload.Reader(data_file, n_procs=1, inline_reads=False, io_mode=io_mode)
        d = r.get_dataset("contig")
        stages = [d.create_stage(10) for _ in range(10)]
        fs = [r.request(d[i * 10:i * 10 + 10], s) for i, s in enumerate(stages)]
        wait_running(fs[0])
        out = returns_within(r.stop, BOUND)
        assert "error" not in out, out
        for f in fs:
            e = returns_within(f.exception, BOUND, None)["value"]
            assert isinstance(e, multiload.QueueClosedException), e
            assert isinstance(e, multiload.SubprocessException)
            with pytest.raises(multiload.QueueClosedException):
                f.get()
        # The first stage is written until its read returns: busy, then free.
        r2 = multiload.Reader(data_file, n_procs=1)
        d2 = r2.get_dataset("contig")
        with pytest.raises(RuntimeError, match="already fielding"):
            r2.request(d2[0:10], stages[0])
    assert r._core.join(20), "the stopped reader's worker did not finish its read"
    for _ in range(200):
        try:
            fut = r2.request(d2[0:10], stages[0])
            break
        except RuntimeError:
            time.sleep(0.05)
    np.testing.assert_array_equal(fut.get(), truth()[0:10])
    for s in stages[1:]:  # never written: free at once
        np.testing.assert_array_equal(r2.request(d2[10:20], s).get(), truth()[10:20])
    r2.close(wait=True)


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_close_without_wait_returns_promptly_and_serves_the_queue(data_file, io_mode):
    with faults("slow~1:300"):
        r = multiload.Reader(data_file, n_procs=1, inline_reads=False, io_mode=io_mode)
        d = r.get_dataset("gz")
        fs = [r.request(d[i * 100:i * 100 + 100], d.create_stage(100)) for i in range(4)]
        wait_running(fs[0])
        returns_within(r.close, 0.25)  # not even one read
        with pytest.raises(RuntimeError, match="closed"):
            r.request(d[0:1], d.create_stage(1))
        for i, f in enumerate(fs):
            np.testing.assert_array_equal(f.result(timeout=rf.GET_TIMEOUT), truth()[i * 100:i * 100 + 100])
        assert r._core.join(rf.GET_TIMEOUT)


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_dropping_a_running_future_does_not_block(data_file, io_mode):
    """del of a future whose read is in flight returns at once; its stage
    stays busy (a new request on it is refused) until the read is over,
    and the reader keeps working."""
    with faults(f"slow~1:{SLOW_MS}"):
        r = multiload.Reader(data_file, n_procs=2, inline_reads=False, io_mode=io_mode)
        d = r.get_dataset("contig")
        stage = d.create_stage(10)
        fs = [r.request(d[0:10], stage)]
        wait_running(fs[0])
        returns_within(fs.pop, BOUND)  # drops the future
        gc.collect()
        with pytest.raises(RuntimeError, match="already fielding"):
            r.request(d[0:10], stage)
    for _ in range(400):  # the read returns (faults are off now): the stage is free again
        try:
            fut = r.request(d[20:30], stage)
            break
        except RuntimeError:
            time.sleep(0.05)
    np.testing.assert_array_equal(fut.get(), truth()[20:30])
    r.close(wait=True)


def test_dropped_future_and_stage_memory_outlives_the_write(data_file):
    """Future, stage and reader dropped while a worker writes into the
    stage: nothing blocks, the stage's memory stays alive while the write
    is in flight (the reader core holds it) and is freed once it is over.
    Under ASan (make check-asan) a write into freed memory would abort."""
    with faults("slow~1:1500"):
        r = multiload.Reader(data_file, n_procs=1, inline_reads=False)
        d = r.get_dataset("contig")
        stage = d.create_stage(200)
        buf = weakref.ref(stage._buf)
        f = r.request(d[0:200], stage)
        wait_running(f)
        out = returns_within(lambda: (f.__del__(), None), BOUND)  # as when collected
        assert "error" not in out, out
        del f, stage
        gc.collect()
        assert buf() is not None, "the stage memory was freed while a worker writes into it"
    for _ in range(400):  # freed at a later sweep (here: the next submit) once the read is over
        r.request(d[0:1], d.create_stage(1)).get()
        gc.collect()
        if buf() is None:
            break
        time.sleep(0.05)
    assert buf() is None, "the stage memory was never freed"
    # and the same with the reader dropped too, while the read is in flight
    with faults("slow~1:1500"):
        r2 = multiload.Reader(data_file, n_procs=1, inline_reads=False)
        d2 = r2.get_dataset("contig")
        f = r2.request(d2[0:200], d2.create_stage(200))
        wait_running(f)
        out = returns_within(lambda: [None for _ in [f.__del__(), r2.__del__()]], BOUND)
        assert "error" not in out, out
        del f, r2, d2
        gc.collect()
    r.close(wait=True)


def test_result_and_exception_keep_their_timeout(data_file):
    """No worker free: result(timeout=) and exception(timeout=) raise
    TimeoutError once the timeout passes (the waiting thread takes on no
    read), and the request is still served afterwards."""
    with faults("slow~1:1500"):
        r = multiload.Reader(data_file, n_procs=1, inline_reads=False)
        d = r.get_dataset("contig")
        fs = [r.request(d[i:i + 10], d.create_stage(10)) for i in range(4)]
        # the reads are one after another: fs[3] is done after 6 s, fs[2] after 4.5 s
        for f in (fs[3], fs[2]):
            out = returns_within(f.result, 1.0, 0.3)
            assert isinstance(out.get("error"), concurrent.futures.TimeoutError), out
            assert isinstance(out["error"], TimeoutError)
            out = returns_within(f.exception, 1.0, 0.3)
            assert isinstance(out.get("error"), concurrent.futures.TimeoutError), out
        done, not_done = concurrent.futures.wait([fs[3]], timeout=0.3)
        assert not done and not_done == {fs[3]}
        assert not fs[3].done()
        for i, f in enumerate(fs):
            np.testing.assert_array_equal(f.result(timeout=rf.GET_TIMEOUT), truth()[i:i + 10])
        r.close(wait=True)


def test_waiter_still_runs_cached_requests(data_file):
    """Without faults, on data in the page cache, the waiting thread still
    runs its request (no worker hand-off): the fast path is kept."""
    with open(data_file, "rb") as fh:
        while fh.read(1 << 20):
            pass
    with multiload.Reader(data_file, n_procs=2, inline_reads=False) as r:
        for name in ("contig", "gz"):
            d = r.get_dataset(name)
            stage = d.create_stage(50)
            rows = np.random.default_rng(1).integers(0, rf.N, 50)
            for i in range(200):
                np.testing.assert_array_equal(r.request(d[i], stage).get(), truth()[i])
                np.testing.assert_array_equal(r.request(d[rows], stage).result(timeout=10), truth()[rows])
        assert r.stats()["helped"] > 0


CHILD = r"""
import os, sys, time
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests"))
import reliability_files as rf
import multiload
fn = rf.write_data_file(os.path.join(os.environ["DIR"], "data.h5"))
how = os.environ["HOW"]
r = multiload.Reader(fn, n_procs=1, inline_reads=False)
d = r.get_dataset("contig")
fs = [r.request(d[i * 10:i * 10 + 10], d.create_stage(10)) for i in range(3)]
while not fs[0].running():
    time.sleep(0.005)
print("READY", flush=True)
try:
    if how == "get":
        fs[-1].get()
    elif how == "result":
        fs[-1].result()
    else:
        r.close(wait=True)
    print("RETURNED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    r.stop()
    print("STOPPED", type(fs[-1].exception(timeout=5)).__name__, flush=True)
"""


@pytest.mark.parametrize("io_mode", ["pread", "uring"])
@pytest.mark.parametrize("how", ["get", "result", "close"])
def test_sigint_interrupts_a_wait_promptly(tmp_path, io_mode, how):
    """SIGINT while a thread waits in get(), result() or close(wait=True)
    for a request behind 3 s reads: KeyboardInterrupt, then stop() and the
    interpreter's exit, all well before the read in flight is over."""
    env = dict(os.environ)
    env.update(ROOT=rf.ROOT, DIR=str(tmp_path), HOW=how, MULTILOAD_IO=io_mode,
               MULTILOAD_FAULTS=f"slow~1:{SLOW_MS}",
               PYTHONPATH=rf.ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line.strip() == "READY", (line, p.stderr.read() if p.poll() is not None else "")
        threading.Event().wait(0.5)  # the child is inside the wait
        p.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            out, err = p.communicate(timeout=BOUND + 1)
        except subprocess.TimeoutExpired:
            out, err = p.communicate(timeout=60)
            raise AssertionError(f"the child took {time.monotonic() - sent:.1f} s after SIGINT to exit: "
                                 f"{out!r} {err[-2000:]!r}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "INTERRUPTED" in out and "STOPPED QueueClosedException" in out, (out, err[-2000:])
    assert "RETURNED" not in out
    assert p.returncode == 0, err[-2000:]


def test_futures_work_with_concurrent_futures_and_asyncio(data_file):
    with multiload.Reader(data_file, n_procs=2, inline_reads=False) as r:
        d = r.get_dataset("gz")
        fs = [r.request(d[i * 7:i * 7 + 5], d.create_stage(5)) for i in range(20)]
        assert all(isinstance(f, concurrent.futures.Future) for f in fs)
        done, not_done = concurrent.futures.wait(fs, timeout=rf.GET_TIMEOUT)
        assert len(done) == 20 and not not_done
        for i, f in enumerate(fs):
            np.testing.assert_array_equal(f.result(), truth()[i * 7:i * 7 + 5])
        fs = [r.request(d[i:i + 3], d.create_stage(3)) for i in range(20)]
        seen = [f.result() for f in concurrent.futures.as_completed(fs, timeout=rf.GET_TIMEOUT)]
        assert len(seen) == 20
        for i, f in enumerate(fs):
            np.testing.assert_array_equal(f.result(), truth()[i:i + 3])
        f = r.request(d[100:110], d.create_stage(10))
        done, _ = concurrent.futures.wait([f], timeout=rf.GET_TIMEOUT, return_when=concurrent.futures.FIRST_COMPLETED)
        assert done == {f}

        async def main():
            a = asyncio.wrap_future(r.request(d[5:9], d.create_stage(4)))
            b = r.request(d[[3, 1, 3]], d.create_stage(3))
            return await a, await b, await asyncio.gather(*(asyncio.wrap_future(r.request(d[k], d.create_stage(1)))
                                                           for k in range(10)))

        a, b, many = asyncio.run(main())
        np.testing.assert_array_equal(a, truth()[5:9])
        np.testing.assert_array_equal(b, truth()[[3, 1, 3]])
        for k, v in enumerate(many):
            np.testing.assert_array_equal(v, truth()[k])


def test_cancelling_an_asyncio_task_cancels_a_queued_request(data_file):
    with faults("slow~1:1000"):
        r = multiload.Reader(data_file, n_procs=1, inline_reads=False)
        d = r.get_dataset("contig")
        first = r.request(d[0:10], d.create_stage(10))
        wait_running(first)
        queued = r.request(d[10:20], d.create_stage(10))

        async def main():
            t = asyncio.ensure_future(asyncio.wrap_future(queued))
            await asyncio.sleep(0.05)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t

        asyncio.run(main())
        for _ in range(200):
            if queued.done():
                break
            time.sleep(0.01)
        assert queued.cancelled()
        np.testing.assert_array_equal(first.result(timeout=rf.GET_TIMEOUT), truth()[0:10])
        r.close(wait=True)


def test_result_get_and_cancel_semantics(data_file):
    """result() keeps its copy (the same array every call; get() after it
    returns that array too); get() keeps none (a second get, or result()
    after it, raises RuntimeError); a cancelled future raises
    CancelledError from every method; an error is raised every time."""
    r = multiload.Reader(data_file, n_procs=1, inline_reads=False)
    d = r.get_dataset("contig")
    stage = d.create_stage(5)
    f = r.request(d[0:5], stage)
    a = f.result(timeout=rf.GET_TIMEOUT)
    assert f.result() is a and f.get() is a
    with f.get_unsafe() as v:
        np.testing.assert_array_equal(v, truth()[0:5])
    np.testing.assert_array_equal(a, truth()[0:5])
    g = r.request(d[5:10], stage)  # the stage was freed by result()
    np.testing.assert_array_equal(g.get(), truth()[5:10])
    with pytest.raises(RuntimeError, match="already taken"):
        g.get()
    with pytest.raises(RuntimeError, match="already taken"):
        g.result()
    with faults(f"slow~1:{SLOW_MS}"):
        first = r.request(d[0:5], d.create_stage(5))
        wait_running(first)
        c = r.request(d[5:10], stage)
        assert c.cancel() and c.cancelled() and c.done()
        for take in (c.get, c.result, c.exception, lambda: c.get_direct(len)):
            with pytest.raises(concurrent.futures.CancelledError):
                take()
        returns_within(r.stop, BOUND)
        for take in (first.get, first.result, first.get, lambda: first.get_direct(len)):
            with pytest.raises(multiload.QueueClosedException):
                take()
        assert isinstance(first.exception(), multiload.QueueClosedException)
    assert r._core.join(rf.GET_TIMEOUT)
    with multiload.Reader(data_file, n_procs=1) as r2:  # the cancelled request left the stage free
        np.testing.assert_array_equal(r2.request(r2.get_dataset("contig")[10:15], stage).get(), truth()[10:15])


def test_callbacks_run_once_on_the_notification_thread(data_file):
    with faults("slow~1:200"):
        r = multiload.Reader(data_file, n_procs=1, inline_reads=False)
        d = r.get_dataset("contig")
        f = r.request(d[0:5], d.create_stage(5))
        calls = []
        ev = threading.Event()
        f.add_done_callback(lambda fut: (calls.append((fut, threading.current_thread().name)), ev.set()))
        assert ev.wait(rf.GET_TIMEOUT)
        time.sleep(0.1)
        assert calls == [(f, "multiload-reader-notify")]
        late = []
        f.add_done_callback(late.append)  # done: called at once
        assert late == [f]
        r.close(wait=True)


def test_stop_notifies_queue_closed_at_once(data_file):
    events = []
    with faults(f"slow~1:{SLOW_MS}"):
        r = multiload.Reader(data_file, n_procs=1, inline_reads=False, notify=events.append)
        d = r.get_dataset("contig")
        fs = [r.request(d[i:i + 2], d.create_stage(2)) for i in range(5)]
        wait_running(fs[0])
        returns_within(r.stop, BOUND)
        r._dispatcher.join(BOUND)
        assert not r._dispatcher.is_alive()
        assert events[-1] is multiload.QueueClosed
        assert {id(e) for e in events[:-1]} == {id(f) for f in fs}
    assert r._core.join(20)


def test_error_messages_name_dataset_and_file(data_file):
    with multiload.Reader(data_file, n_procs=1) as r:
        d = r.get_dataset("contig")  # rows of 4 int32: 16 bytes
        small = multiload.reader.Stage(9 * 16)
        with pytest.raises(multiload.SharedMemoryError) as ei:
            r.request(d[0:10], small)
        msg = str(ei.value)
        assert msg.startswith("Stage is smaller than requested array: 144 < 160"), msg
        assert "contig'" in msg and data_file in msg, msg
        stage = d.create_stage(10)
        f = r.request(d[0:10], stage)
        with pytest.raises(RuntimeError) as ei:
            r.request(d[0:10], stage)
        msg = str(ei.value)
        assert msg.startswith("Stage already fielding another request"), msg
        assert "contig'" in msg and data_file in msg, msg
        f.get()


OPS = ["+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "^", "|", "<", "<=", "==", "!=", ">", ">="]


def test_proxy_forwards_the_array_protocol(data_file):
    """Every operator, reflected and in place, comparisons, containers,
    numpy conversion and ufuncs behave as on the array; after the block
    every use raises RuntimeError."""
    with multiload.Reader(data_file, n_procs=1) as r:
        d = r.get_dataset("contig")
        with r.request(d[1:4], d.create_stage(3)).get_proxy() as p:
            a = truth()[1:4].copy()
            for op in OPS:
                np.testing.assert_array_equal(eval(f"p {op} 3"), eval(f"a {op} 3"), err_msg=op)
                np.testing.assert_array_equal(eval(f"7 {op} p"), eval(f"7 {op} a"), err_msg=op)
            np.testing.assert_array_equal(p @ np.ones(4, "i4"), a @ np.ones(4, "i4"))
            np.testing.assert_array_equal(divmod(p, 5)[1], divmod(a, 5)[1])
            np.testing.assert_array_equal(-p, -a)
            np.testing.assert_array_equal(+p, a)
            np.testing.assert_array_equal(abs(p), abs(a))
            np.testing.assert_array_equal(~p, ~a)
            assert (5 in p) == (5 in a) and (a[0, 0] in p) and (-1 not in p)
            assert len(p) == 3 and p.shape == (3, 4) and p.dtype == a.dtype and p.sum() == a.sum()
            np.testing.assert_array_equal(list(p)[1], a[1])
            np.testing.assert_array_equal(list(reversed(p))[0], a[-1])
            assert int(p[0, 1]) == a[0, 1] and float(p[0, 1]) == a[0, 1]
            assert bool(p[0, 1]) is True and p[0, 1] == a[0, 1]
            np.testing.assert_array_equal(np.asarray(p), a)
            np.testing.assert_array_equal(np.add(p, 1), a + 1)
            np.testing.assert_array_equal(a + p, a + a)
            np.testing.assert_array_equal(np.mean(p, axis=0), np.mean(a, axis=0))
            assert isinstance(p, np.ndarray)
            assert "proxy(" in repr(p) and str(a) == str(p)
            q = p
            p += 1  # in place: changes the stage, keeps the proxy
            assert p is q
            np.testing.assert_array_equal(p, a + 1)
            p[0] = 0
            assert p[0].sum() == 0
            np.add(p, 1, out=p)
            np.testing.assert_array_equal(p[1], a[1] + 2)
        for use in (lambda: p + 1, lambda: 1 + p, lambda: p ** 2, lambda: 5 in p, lambda: len(p), lambda: p[0],
                    lambda: p.shape, lambda: np.asarray(p), lambda: list(p), lambda: p == 1, lambda: bool(p)):
            with pytest.raises(RuntimeError, match="released"):
                use()
        with pytest.raises(RuntimeError, match="released"):
            p += 1
        assert "released" in repr(p)
