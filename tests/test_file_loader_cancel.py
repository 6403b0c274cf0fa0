"""Cancellation of FileLoader requests (docs/file-loader.md, "Cancellation";
docs/async.md's table): ``Worker.submit`` handles cancelled while queued
(never read: stats()["completed"] does not count them, their entry is free
at once), while running (abandoned: the read completes, the core frees the
entry, nobody is handed it), after completion (discarded), after being
taken (cancel() is False, the entry stays the caller's); ``cancel_pending``;
asyncio task cancellation on asyncio's loop and on uvloop; the same with a
loader process serving a worker process; close() with cancelled requests
outstanding.

Truth is the files' own bytes. Requests are held "running" with the core's
slow-read fault injection (MULTILOAD_FAULTS=slow@N:ms) or "queued" by a
loader that is not started yet. Nothing asserts a time: waits are bounded
only so that a hang fails instead of stalling CI.
"""

import asyncio
import concurrent.futures
import gc
import multiprocessing as mp
import random
import threading
import time

import pytest

import multiload
from aio_loops import run  # noqa: F401  (the asyncio and uvloop legs)
from reliability_files import faults

pytestmark = pytest.mark.timeout(180)

BOUND = 30.0  # s: only a hang takes this long
MAXF = 1 << 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flcancel")
    rng = random.Random(16)
    out = []
    for i in range(60):
        p = d / f"f{i:03d}.bin"
        p.write_bytes(rng.randbytes(0 if i == 0 else rng.randrange(1, MAXF + 1)))
        out.append(str(p))
    return out


def _disk(path):
    with open(path, "rb") as f:
        return f.read()


def _wait_until(cond, what):
    """Poll a condition of the test's own, bounded (never a timed assertion)."""
    deadline = time.monotonic() + BOUND
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {BOUND} s")
        threading.Event().wait(0.005)


# ------------------------------------------------------------------ sync


def test_cancel_while_queued_never_runs_and_frees_the_entry(files):
    with multiload.FileLoader(queue_depth=2, max_file_size=MAXF, n_workers=1, n_threads=1) as fl:
        w = fl.get_worker_context(0)
        r0, r1 = w.submit(files[1]), w.submit(files[2])
        assert w.submit(files[3]) is None  # both entries in use: back-pressure
        assert not r0.done() and not r0.cancelled() and not r0.running()
        with pytest.raises(TimeoutError, match="f001.bin"):
            r0.wait(0.01)  # nobody serves yet: the error names the file
        assert r0.cancel() is True
        assert r0.cancelled() and r0.done() and not r0.running()
        assert r0.cancel() is True  # idempotent
        with pytest.raises(concurrent.futures.CancelledError):
            r0.wait(BOUND)
        st = fl.stats()
        assert (st["cancelled"], st["abandoned"], st["in_flight"]) == (1, 0, 1)
        r2 = w.submit(files[3])  # the cancelled request's entry is free at once
        assert r2 is not None
        fl.start()
        for r, p in ((r1, files[2]), (r2, files[3])):
            with r.wait(BOUND) as e:
                assert e.get_filepath() == p and e.get_data() == _disk(p)
        assert r0.cancelled()  # its entry was reused: still says cancelled
        _wait_until(lambda: fl.stats()["in_flight"] == 0, "the reads")
        st = fl.stats()
        assert (st["requested"], st["completed"], st["cancelled"]) == (3, 2, 1)  # never read
        assert st["bytes"] == len(_disk(files[2])) + len(_disk(files[3]))


def test_cancel_pending_cancels_queued_requests_of_both_kinds(files):
    with multiload.FileLoader(queue_depth=4, max_file_size=MAXF, n_workers=2, n_threads=1) as fl:
        w0, w1 = fl.get_worker_context(0), fl.get_worker_context(1)
        assert w0.request(files[4]) and w0.request(files[5])
        h = w0.submit(files[6])
        assert w1.request(files[7])
        assert w0.cancel_pending() == 3
        assert h.cancelled()
        assert w0.try_get() is None
        with pytest.raises(RuntimeError, match="nothing requested"):
            w0.wait_get()  # nothing left that could complete
        fl.start()
        with w1.wait_get(BOUND) as e:  # the other worker's request is untouched
            assert e.get_data() == _disk(files[7])
        for p in files[8:12]:  # all four entries of worker 0 are free again
            assert w0.request(p)
        got = {}
        for _ in range(4):
            with w0.wait_get(BOUND) as e:
                got[e.get_filepath()] = e.get_data()
        assert got == {p: _disk(p) for p in files[8:12]}
        assert fl.stats()["cancelled"] == 3


def test_cancel_while_running_abandons(files):
    with faults("slow@1:1500"):
        with multiload.FileLoader(queue_depth=1, max_file_size=MAXF, n_workers=1, n_threads=1) as fl:
            fl.start()
            w = fl.get_worker_context(0)
            r = w.submit(files[13])
            _wait_until(r.running, "the slow read to start")
            t0 = time.monotonic()
            assert r.cancel() is True
            assert time.monotonic() - t0 < BOUND  # never waits for the read (bounded-return check)
            assert r.cancelled() and r.done() and not r.running()
            with pytest.raises(concurrent.futures.CancelledError):
                r.wait(BOUND)
            st = fl.stats()
            assert (st["abandoning"], st["in_flight"], st["ready"]) == (1, 0, 0)
            # The slot is the loader's until the read ends: back-pressure counts it used.
            assert w.submit(files[14]) is None
            r2 = w.submit(files[14], timeout=BOUND)  # freed by the core once the read is over
            assert r2 is not None
            with r2.wait(BOUND) as e:
                assert e.get_data() == _disk(files[14])
            assert w.try_get() is None  # the abandoned read was never handed out
            st = fl.stats()
            assert (st["abandoned"], st["abandoning"], st["cancelled"], st["unreleased"]) == (1, 0, 0, 0)


def test_cancel_after_completion_discards_and_frees(files):
    with multiload.FileLoader(queue_depth=1, max_file_size=MAXF, n_workers=1) as fl:
        fl.start()
        w = fl.get_worker_context(0)
        r = w.submit(files[15])
        _wait_until(r.done, "the read")
        assert fl.stats()["ready"] == 1
        assert r.cancel() is True
        assert r.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            r.wait(0)
        st = fl.stats()
        assert (st["abandoned"], st["ready"], st["unreleased"]) == (1, 0, 0)
        assert w.try_get() is None  # discarded: no get ever returns it
        assert w.request(files[16])  # the entry is free
        with w.wait_get(BOUND) as e:
            assert e.get_data() == _disk(files[16])
        # A request() entry cancelled after completion is taken off the done FIFO too.
        assert w.cancel_pending() == 0


def test_cancel_after_taken_is_false_and_leaves_the_entry(files):
    with multiload.FileLoader(queue_depth=2, max_file_size=MAXF, n_workers=1) as fl:
        fl.start()
        w = fl.get_worker_context(0)
        r = w.submit(files[17])
        e = r.wait(BOUND)
        assert r.wait(0) is e  # the same entry on every call
        assert r.cancel() is False and not r.cancelled() and r.done()
        assert e.get_data() == _disk(files[17]) and bytes(e.array) == _disk(files[17])
        assert fl.stats()["unreleased"] == 1
        e.release()
        st = fl.stats()
        assert (st["unreleased"], st["cancelled"], st["abandoned"]) == (0, 0, 0)


def test_submitted_entries_never_reach_wait_get(files):
    with multiload.FileLoader(queue_depth=3, max_file_size=MAXF, n_workers=1) as fl:
        fl.start()
        w = fl.get_worker_context(0)
        h = w.submit(files[18])
        assert w.request(files[19])
        with w.wait_get(BOUND) as e:
            assert e.get_filepath() == files[19] and e.get_data() == _disk(files[19])
        _wait_until(h.done, "the submitted read")
        assert w.try_get() is None
        with pytest.raises(RuntimeError, match="nothing requested"):
            w.wait_get()  # only the handle can take it: waiting would never end
        with h.wait(BOUND) as e:
            assert e.get_filepath() == files[18] and e.get_data() == _disk(files[18])


def test_dropped_handle_cancels_its_request(files):
    with multiload.FileLoader(queue_depth=1, max_file_size=MAXF, n_workers=1) as fl:
        w = fl.get_worker_context(0)
        r = w.submit(files[20])
        assert r is not None
        del r
        gc.collect()
        assert fl.stats()["cancelled"] == 1
        fl.start()
        r = w.submit(files[21])  # the entry was freed
        with r.wait(BOUND) as e:
            assert e.get_data() == _disk(files[21])


def test_mixed_cancellations_every_other_read_is_exact(files):
    """Requests and handles through 2 threads, a third of the handles
    cancelled at once (queued, running or done: whatever they are): every
    request not cancelled reads the file's bytes, every entry is free at
    the end, and the counters add up."""
    rng = random.Random(3)
    with faults("slow~0.3/7:20"):
        with multiload.FileLoader(queue_depth=6, max_file_size=MAXF, n_workers=1, n_threads=2) as fl:
            fl.start()
            w = fl.get_worker_context(0)
            handles, cancelled, read = [], 0, 0
            for i, p in enumerate(files * 2):
                if i % 4 == 0:
                    while not w.request(p, timeout=BOUND):
                        pass
                    with w.wait_get(BOUND) as e:  # may be this or an earlier request() entry
                        assert e.get_data() == _disk(e.get_filepath())
                        read += 1
                    continue
                h = w.submit(p, timeout=BOUND)
                assert h is not None
                if rng.random() < 0.33:
                    assert h.cancel()
                    cancelled += 1
                else:
                    handles.append(h)
                if len(handles) >= 3:
                    h0 = handles.pop(0)
                    with h0.wait(BOUND) as e:
                        assert e.get_filepath() == h0.path and e.get_data() == _disk(h0.path)
                        read += 1
            for h in handles:
                with h.wait(BOUND) as e:
                    assert e.get_data() == _disk(h.path)
                    read += 1
            _wait_until(lambda: fl.stats()["abandoning"] == 0, "the abandoned reads")
            st = fl.stats()
            assert st["cancelled"] + st["abandoned"] == cancelled
            assert (st["in_flight"], st["ready"], st["unreleased"]) == (0, 0, 0)
            assert st["requested"] == read + cancelled
            assert st["completed"] == read + st["abandoned"]


def test_close_with_cancelled_requests_outstanding_returns(files):
    with faults("slow@1:3000"):
        fl = multiload.FileLoader(queue_depth=3, max_file_size=MAXF, n_workers=1, n_threads=1)
        fl.start()
        w = fl.get_worker_context(0)
        running = w.submit(files[22])
        _wait_until(running.running, "the slow read to start")
        queued = w.submit(files[23])
        waiting = w.submit(files[24])
        assert running.cancel() and queued.cancel()
        got = []
        t = threading.Thread(target=lambda: got.append(waiting.wait(BOUND)))
        t.start()
        t0 = time.monotonic()
        fl.close()
        assert time.monotonic() - t0 < BOUND  # bounded-return check
        t.join(BOUND)
        assert not t.is_alive() and got == [multiload.QueueClosed]
        assert fl.closed and running.cancel() and running.cancelled()


# --------------------------------------------------------------- asyncio


def test_await_submit_exact(run, files):
    async def main():
        async with multiload.FileLoader(queue_depth=4, max_file_size=MAXF, n_workers=1) as fl:
            fl.start()
            w = fl.get_worker_context(0)
            out = {}
            for p in files[25:37]:
                r = w.submit(p, timeout=BOUND)
                with await r as e:
                    out[e.get_filepath()] = e.get_data()
            assert fl.stats()["cancelled"] == 0
            return out

    assert run(main()) == {p: _disk(p) for p in files[25:37]}


def test_task_cancel_while_queued_and_running(run, files):
    """One loader thread held by a slow first read: the awaited second
    request is queued; cancelling its task cancels it (it never runs).
    Cancelling the task awaiting the running one abandons it."""
    async def main():
        fl = multiload.FileLoader(queue_depth=2, max_file_size=MAXF, n_workers=1, n_threads=1)
        fl.start()
        w = fl.get_worker_context(0)
        slow = w.submit(files[38])
        while not slow.running():
            await asyncio.sleep(0.005)
        queued = w.submit(files[39])
        t = asyncio.ensure_future(_aw(queued))
        await asyncio.sleep(0.01)
        assert not t.done()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert queued.cancelled() and fl.stats()["cancelled"] == 1
        t2 = asyncio.ensure_future(_aw(slow))
        await asyncio.sleep(0.01)
        t2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t2
        assert slow.cancelled()
        nxt = w.submit(files[40])  # queued's entry is free again
        assert nxt is not None
        with await asyncio.wait_for(_aw(nxt), BOUND) as e:
            assert e.get_data() == _disk(files[40])
        assert w.try_get() is None
        st = fl.stats()
        fl.close()
        return st

    with faults("slow@1:1500"):
        st = run(main())
    assert (st["cancelled"], st["abandoned"], st["unreleased"], st["in_flight"]) == (1, 1, 0, 0)


async def _aw(r):
    return await r


def test_task_cancel_after_completion_discards(run, files):
    """The awaiting task is suspended on the loader's event fd; the file
    completes while the loop is blocked (the test sleeps on the loop's
    thread), and the task is cancelled before it resumes: the result is
    discarded and the entry freed; nobody is handed it."""
    async def main():
        with faults("slow@1:300"):
            async with multiload.FileLoader(queue_depth=1, max_file_size=MAXF, n_workers=1) as fl:
                fl.start()
                w = fl.get_worker_context(0)
                r = w.submit(files[41])
                t = asyncio.ensure_future(_aw(r))
                await asyncio.sleep(0)  # the task runs up to its wait on the event fd
                assert not t.done()
                _wait_until(r.done, "the read")  # blocks the loop: the task cannot resume
                assert fl.stats()["ready"] == 1
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
                assert r.cancelled()
                st = fl.stats()
                assert (st["abandoned"], st["ready"], st["unreleased"]) == (1, 0, 0)
                r2 = w.submit(files[42])  # the entry is free again
                with await asyncio.wait_for(_aw(r2), BOUND) as e:
                    return e.get_data()

    assert run(main()) == _disk(files[42])


# ------------------------------------------------------ loader process


def cancel_in_worker(worker, paths, q):
    """A worker process (the loader is another process, one thread, its
    first read slow): cancel a running and a queued request, then read the
    rest; report what it saw."""
    try:
        slow = worker.submit(paths[0])
        deadline = time.monotonic() + BOUND
        while not slow.running() and time.monotonic() < deadline:
            time.sleep(0.005)
        queued = worker.submit(paths[1])
        out = {"running": slow.running(), "cancel_running": slow.cancel(), "cancel_queued": queued.cancel()}
        try:
            slow.wait(BOUND)
            out["wait_cancelled"] = False
        except concurrent.futures.CancelledError:
            out["wait_cancelled"] = True

        async def aio():
            r = worker.submit(paths[2], timeout=BOUND)
            t = asyncio.ensure_future(_aw(r))
            await asyncio.sleep(0)
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
            return r.cancelled()

        out["aio_cancelled"] = asyncio.run(aio())
        got = {}
        for p in paths[3:]:
            r = worker.submit(p, timeout=BOUND)
            with r.wait(BOUND) as e:
                got[e.get_filepath()] = e.get_data()
        out["got"] = got
        q.put(out)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        q.put(repr(e))


def test_cancel_in_a_worker_process_with_a_loader_process(files):
    ctx = mp.get_context("spawn")
    paths = files[43:50]
    with faults("slow@1:2000"):
        with multiload.FileLoader(queue_depth=2, max_file_size=MAXF, n_workers=1, n_threads=1) as fl:
            fl.spawn_loader()
            q = ctx.Queue()
            p = ctx.Process(target=cancel_in_worker, args=(fl.get_worker_context(0), paths, q))
            p.start()
            out = q.get(timeout=120)
            p.join(BOUND)
            assert isinstance(out, dict), out
            assert out["running"] and out["cancel_running"] and out["cancel_queued"] and out["wait_cancelled"]
            assert out["aio_cancelled"]
            assert out["got"] == {x: _disk(x) for x in paths[3:]}
            _wait_until(lambda: fl.stats()["abandoning"] == 0, "the abandoned read")
            st = fl.stats()
            assert st["cancelled"] + st["abandoned"] == 3 and st["abandoned"] >= 1
            assert (st["in_flight"], st["ready"], st["unreleased"]) == (0, 0, 0)
            assert p.exitcode == 0
