"""asyncio: ``async for`` over Streamer queues, ``await`` of Reader requests,
``await worker.wait_get_async()``, ``async with``, and the cancellation
states (docs/async.md), each on asyncio's default loop and on uvloop.

Truth is h5py (and the files' own bytes for the FileLoader). Requests are
held in "running" with the core's slow-I/O fault injection
(MULTILOAD_FAULTS=slow...); nothing here asserts a time: waits are bounded
only so that a hang fails instead of stalling CI.
"""

import asyncio
import concurrent.futures
import os
import threading

import h5py
import numpy as np
import pytest

import multiload
from multiload import _aio
from aio_loops import run  # noqa: F401  (the asyncio and uvloop legs)
from reliability_files import faults

pytestmark = pytest.mark.timeout(180)

N, COLS, CHUNK = 20_000, 4, 500
BOUND = 30.0  # s: only a hang takes this long


@pytest.fixture(scope="module")
def h5file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("aio") / "data.h5")
    v = np.arange(N * COLS, dtype="<f8").reshape(N, COLS) * 0.5
    with h5py.File(fn, "w") as f:
        f.create_dataset("contig", data=v)
        f.create_dataset("gz", data=v, chunks=(CHUNK, COLS), compression="gzip", shuffle=True)
    return fn


@pytest.fixture(scope="module")
def truth(h5file):
    with h5py.File(h5file, "r") as f:
        return {k: f[k][()] for k in f}


def _wait_until(cond, what):
    """Poll a condition of the test's own (not of the library), bounded."""
    for _ in range(int(BOUND / 0.005)):
        if cond():
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"{what} did not happen within {BOUND} s")


# ---------------------------------------------------------------- Streamer


@pytest.mark.parametrize("path", ["contig", "gz"])
@pytest.mark.parametrize("ordered", [True, False])
def test_async_for_queue_equals_h5py(run, h5file, truth, path, ordered):
    async def main():
        got = {}
        q = multiload.Streamer(h5file).get_queue(path, n_procs=2, block_size=700, ordered=ordered,
                                                 remainder=True)
        async with q:
            async for guard in q:
                with guard as block:
                    got[guard.start] = np.array(block)
        assert q.closed
        return got

    got = run(main())
    rows = np.concatenate([got[k] for k in sorted(got)])
    np.testing.assert_array_equal(rows, truth[path])


def test_async_for_many_consumers_one_queue(run, h5file, truth):
    """Several coroutines share one queue: every block once, no thread added."""
    async def consumer(q, got):
        async for guard in q:
            with guard as block:
                got.append((guard.start, np.array(block)))
            await asyncio.sleep(0)

    async def main():
        got = []
        async with multiload.Streamer(h5file).get_queue("gz", n_procs=2, block_size=500, read_ahead=4) as q:
            n0 = threading.active_count()
            await asyncio.gather(*(consumer(q, got) for _ in range(8)))
            assert threading.active_count() <= n0
        return got

    got = run(main())
    got.sort(key=lambda x: x[0])
    np.testing.assert_array_equal(np.concatenate([b for _, b in got]), truth["gz"])


def test_queue_get_async_after_close_and_timeout(run, h5file):
    async def main():
        with faults("slow~1:400"):
            q = multiload.Streamer(h5file).get_queue("contig", n_procs=1, block_size=1000)
            with pytest.raises(TimeoutError):
                await q.get_async(timeout=0.01)
            q.close()
        assert await q.get_async() is multiload.QueueClosed
        with pytest.raises(StopAsyncIteration):
            await q.__anext__()

    run(main())


def test_queue_close_wakes_async_waiter(run, h5file):
    """close() while a coroutine awaits the next block: it gets QueueClosed."""
    async def main():
        with faults("slow~1:1500"):
            q = multiload.Streamer(h5file).get_queue("contig", n_procs=1, block_size=1000)
            waiter = asyncio.ensure_future(q.get_async())
            await asyncio.sleep(0)  # it waits on the fd now
            assert not waiter.done()
            asyncio.get_running_loop().call_soon(q.close)
            res = await asyncio.wait_for(waiter, BOUND)
        assert res is multiload.QueueClosed

    run(main())


def test_queue_task_cancel_takes_no_block(run, h5file, truth):
    """Cancelling a task awaiting get_async takes no block: the next get has it."""
    async def main():
        with faults("slow@1:800"):
            async with multiload.Streamer(h5file).get_queue("contig", n_procs=1, block_size=1000,
                                                            ordered=True) as q:
                t = asyncio.ensure_future(q.get_async())
                await asyncio.sleep(0)
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
                g = await asyncio.wait_for(q.get_async(), BOUND)
                with g as block:
                    assert g.start == 0
                    np.testing.assert_array_equal(block, truth["contig"][:1000])

    run(main())


# ------------------------------------------------------------------ Reader


def test_5000_concurrent_awaits_equal_h5py_and_cost_no_threads(run, h5file, truth):
    rng = np.random.default_rng(5)
    rows = rng.integers(0, N, 5000)

    async def main():
        async with multiload.Reader(h5file, n_procs=2) as r:
            a = r.get_dataset("gz")
            futs = [r.request(a[int(i)], a.create_stage(1)) for i in rows]
            n0 = threading.active_count()
            peak = [n0]

            async def watch():
                while True:
                    peak[0] = max(peak[0], threading.active_count())
                    await asyncio.sleep(0.001)

            w = asyncio.ensure_future(watch())
            res = await asyncio.gather(*futs)
            w.cancel()
            assert peak[0] <= n0, f"threads grew from {n0} to {peak[0]} while awaiting 5000 requests"
            assert r._dispatcher is None  # the notification thread was never needed
            # all the waits shared one add_reader registration, gone now
            assert not [k for k in _aio._registry if k[0] is asyncio.get_running_loop()]
            return res

    res = run(main())
    np.testing.assert_array_equal(np.stack(res), truth["gz"][rows])


def test_await_request_slices_and_errors(run, h5file, truth):
    async def main():
        with multiload.Reader(h5file, n_procs=2) as r:
            a = r.get_dataset("contig")
            got = await r.request(a[100:4100], a.create_stage(4000))
            np.testing.assert_array_equal(got, truth["contig"][100:4100])
            g = r.get_dataset("gz")
            fut = r.request(g[[5, 3, 19999, 3]], g.create_stage(4))
            np.testing.assert_array_equal(await fut, truth["gz"][[5, 3, 19999, 3]])
            np.testing.assert_array_equal(await fut, truth["gz"][[5, 3, 19999, 3]])  # result() kept
        with faults("eio~1"):
            with multiload.Reader(h5file, n_procs=1, inline_reads=False) as r:
                a = r.get_dataset("contig")
                with pytest.raises(OSError) as ei:
                    await r.request(a[0:10], a.create_stage(10))
                assert ei.value.filename == h5file and "contig" in str(ei.value)

    run(main())


def _held_running(r, a, stage_rows=1000):
    """A request the single worker is inside a slow read of (running), and
    one queued behind it."""
    s1, s2 = a.create_stage(stage_rows), a.create_stage(stage_rows)
    running = r.request(a[0:stage_rows], s1)
    _wait_until(running.running, "the first request running")
    queued = r.request(a[stage_rows:2 * stage_rows], s2)
    assert not queued.running() and not queued.done()
    return running, s1, queued, s2


def test_cancel_task_while_queued_never_runs(run, h5file, truth):
    """Task cancelled while its request is queued: the request is cancelled,
    never runs, its stage is free at once."""
    async def main():
        with faults("slow@1:1000"):
            with multiload.Reader(h5file, n_procs=1, inline_reads=False) as r:
                a = r.get_dataset("contig")
                running, s1, queued, s2 = _held_running(r, a)
                t = asyncio.ensure_future(queued)
                await asyncio.sleep(0)
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
                assert queued.cancelled() and queued._creq.status() == "cancelled"
                again = r.request(a[5:10], s2)  # the stage is free at once
                np.testing.assert_array_equal(await again, truth["contig"][5:10])
                np.testing.assert_array_equal(await running, truth["contig"][0:1000])
                assert r.stats()["rows"] == 1000 + 5  # the cancelled request read no row
    run(main())


def test_cancel_task_while_running_abandons(run, h5file, truth):
    """Task cancelled while its request runs: the read completes in the
    background, its result is discarded, its stage stays lent until no
    thread writes it (never handed back under the worker), then is free."""
    async def main():
        with faults("slow@1:800"):
            with multiload.Reader(h5file, n_procs=1, inline_reads=False) as r:
                a = r.get_dataset("contig")
                s1 = a.create_stage(1000)
                running = r.request(a[0:1000], s1)
                _wait_until(running.running, "the request running")
                t = asyncio.ensure_future(running)
                await asyncio.sleep(0)
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
                assert running._creq.busy()  # still being read: the stage is the worker's
                with pytest.raises(RuntimeError, match="Stage already fielding"):
                    r.request(a[0:5], s1)
                with pytest.raises(concurrent.futures.CancelledError, match="discarded"):
                    running.get()
                # the read finishes; then the stage serves the next request, exact
                assert running._creq.wait(BOUND)
                _wait_until(lambda: not running._creq.busy(), "the worker released the stage")
                nxt = r.request(a[2000:3000], s1)
                np.testing.assert_array_equal(await nxt, truth["contig"][2000:3000])
                with pytest.raises(concurrent.futures.CancelledError):
                    running.result()

    run(main())


def test_cancel_task_after_completion_discards_result(run, h5file, truth):
    """Request done, awaiting task cancelled before it resumed: the result
    is discarded and the stage released."""
    async def main():
        with multiload.Reader(h5file, n_procs=1, inline_reads=False) as r:
            a = r.get_dataset("gz")
            s = a.create_stage(100)
            req = r.request(a[0:100], s)
            t = asyncio.ensure_future(req)
            await asyncio.sleep(0)  # t awaits the request's key
            assert req._creq.wait(BOUND)  # done now; t has not resumed
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert req.done()
            with pytest.raises(concurrent.futures.CancelledError, match="discarded"):
                req.get()
            nxt = r.request(a[100:200], s)  # the stage was released
            np.testing.assert_array_equal(await nxt, truth["gz"][100:200])

    run(main())


def test_cancel_returns_quickly_and_close_completes(run, h5file):
    """Cancelling thousands of awaiting tasks whose requests are queued or
    running returns; close() then completes."""
    async def main():
        with faults("slow~1:300"):
            r = multiload.Reader(h5file, n_procs=1, inline_reads=False)
            a = r.get_dataset("contig")
            reqs = [r.request(a[i:i + 1], a.create_stage(1)) for i in range(2000)]
            tasks = [asyncio.ensure_future(q) for q in reqs]
            await asyncio.sleep(0)
            for t in tasks:
                t.cancel()
            res = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(x, asyncio.CancelledError) for x in res)
            assert sum(q.cancelled() for q in reqs) >= 1990  # all but the one(s) running
            r.stop()
            r.close(wait=True)

    run(main())


def test_reader_stop_wakes_awaiting_task(run, h5file):
    """stop() while a task awaits a running request: it raises the reader's
    closed error (QueueClosedException) at once, not after the read."""
    async def main():
        with faults("slow@1:3000"):
            r = multiload.Reader(h5file, n_procs=1, inline_reads=False)
            a = r.get_dataset("contig")
            req = r.request(a[0:1000], a.create_stage(1000))
            queued = r.request(a[0:10], a.create_stage(10))
            _wait_until(req.running, "the request running")
            t1, t2 = asyncio.ensure_future(req), asyncio.ensure_future(queued)
            await asyncio.sleep(0)
            asyncio.get_running_loop().call_soon(r.stop)
            for t in (t1, t2):
                with pytest.raises(multiload.QueueClosedException):
                    await asyncio.wait_for(t, BOUND)
            r.close(wait=True)

    run(main())


def test_keyboard_interrupt_in_loop_leaves_nothing_hanging(run, h5file):
    """KeyboardInterrupt raised in the loop while requests and a queue are
    awaited: the runner cancels the tasks (queued requests cancelled,
    running ones abandoned), and close() of everything returns."""
    box = {}

    def boom():
        raise KeyboardInterrupt

    async def main():
        r = box["r"] = multiload.Reader(h5file, n_procs=1, inline_reads=False)
        a = r.get_dataset("contig")
        box["reqs"] = reqs = [r.request(a[i:i + 100], a.create_stage(100)) for i in range(0, 5000, 100)]
        q = box["q"] = multiload.Streamer(h5file).get_queue("contig", n_procs=1, block_size=1000)
        tasks = [asyncio.ensure_future(x) for x in reqs]
        consumer = asyncio.ensure_future(_drain(q))
        asyncio.get_running_loop().call_later(0.02, boom)
        await asyncio.gather(*tasks, consumer)

    n0 = threading.active_count()
    with faults("slow~1:200"):
        with pytest.raises(KeyboardInterrupt):
            run(main())
        r, q = box["r"], box["q"]
        for req in box["reqs"]:
            assert req.done() or req._taken  # cancelled, abandoned, or taken: none left dangling
        q.close()
        r.stop()
        r.close(wait=True)
    assert q.closed
    _wait_until(lambda: threading.active_count() <= n0 + 1, "threads gone")  # (+1: a lazily made executor)


async def _drain(q):
    async for g in q:
        g.release()
        await asyncio.sleep(0.001)


def test_two_loops_on_one_reader(run, h5file, truth):
    """Requests of one reader awaited from two loops in two threads: every
    key reaches its own loop (a key popped by the other loop is forwarded)."""
    r = multiload.Reader(h5file, n_procs=2)
    a = r.get_dataset("gz")
    out = {}

    def side(name, lo):
        async def main():
            rows = list(range(lo, lo + 400))
            return await asyncio.gather(*(r.request(a[i], a.create_stage(1)) for i in rows))
        loop = run.factory()
        try:
            out[name] = loop.run_until_complete(main())
        finally:
            loop.close()

    ts = [threading.Thread(target=side, args=(k, lo)) for k, lo in (("x", 0), ("y", 5000))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(BOUND)
    assert not any(t.is_alive() for t in ts)
    r.close(wait=True)
    np.testing.assert_array_equal(np.stack(out["x"]), truth["gz"][0:400])
    np.testing.assert_array_equal(np.stack(out["y"]), truth["gz"][5000:5400])


# -------------------------------------------------------------- FileLoader


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("aiofiles")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(40):
        p = d / f"f{i}.bin"
        p.write_bytes(rng.integers(0, 256, 1000 + 37 * i, dtype=np.uint8).tobytes())
        paths.append(str(p))
    return paths


def test_file_loader_wait_get_async_exact(run, files):
    async def main():
        got = {}
        async with multiload.FileLoader(queue_depth=4, max_file_size=1 << 16, n_workers=2) as fl:
            fl.start()
            n0 = threading.active_count()

            async def worker(wid, paths):
                w = fl.get_worker_context(wid)
                todo = list(paths)
                n = 0
                while n < len(paths):
                    while todo and w.request(todo[0]):
                        todo.pop(0)
                    with await w.wait_get_async(timeout=BOUND) as e:
                        got[e.get_filepath()] = bytes(e.array)
                    n += 1

            await asyncio.gather(worker(0, files[:20]), worker(1, files[20:]))
            assert threading.active_count() <= n0
            with pytest.raises(RuntimeError, match="nothing requested"):
                await fl.get_worker_context(0).wait_get_async()
        assert fl.closed
        return got

    got = run(main())
    assert got == {p: open(p, "rb").read() for p in files}


def test_file_loader_close_wakes_async_waiter_and_cancel(run, files):
    """A task cancelled while waiting takes no entry: the next wait gets it.
    close() while a coroutine awaits a file (held loading by a slow read):
    it gets QueueClosed."""
    async def main():
        fl = multiload.FileLoader(queue_depth=2, max_file_size=1 << 16, n_workers=1)
        fl.start()
        w = fl.get_worker_context(0)
        assert w.request(files[0])
        e = await w.wait_get_async(timeout=BOUND)
        e.release()
        assert w.request(files[1])
        t = asyncio.ensure_future(w.wait_get_async())
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        with await w.wait_get_async(timeout=BOUND) as e:  # the cancelled wait took nothing
            assert e.get_filepath() == files[1] and bytes(e.array) == open(files[1], "rb").read()
        assert w.request(files[2])  # the third read: slow
        waiter = asyncio.ensure_future(w.wait_get_async())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        asyncio.get_running_loop().call_soon(fl.close)
        assert await asyncio.wait_for(waiter, BOUND) is multiload.QueueClosed

    with faults("slow@3:3000"):
        run(main())


# ------------------------------------------------------------- _aio itself


def test_wait_fd_wakes_all_and_unregisters(run):
    async def main():
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            loop = asyncio.get_running_loop()
            ws = [asyncio.ensure_future(_aio.wait_fd(fd)) for _ in range(100)]
            await asyncio.sleep(0)
            assert (loop, fd) in _aio._registry
            os.eventfd_write(fd, 1)
            await asyncio.wait_for(asyncio.gather(*ws), BOUND)
            assert (loop, fd) not in _aio._registry
            c = asyncio.ensure_future(_aio.wait_fd(fd))
            await asyncio.sleep(0)
            c.cancel()
            with pytest.raises(asyncio.CancelledError):
                await c
            assert (loop, fd) not in _aio._registry
        finally:
            os.close(fd)

    run(main())


# ------------------------------------------------------------------ the docs


def test_async_guide_examples_run(tmp_path, monkeypatch):
    """Every ```python block of docs/async.md runs, in order, in one namespace."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parent.parent / "docs" / "async.md"
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.M | re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "docs_example"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/async.md block {i + 1}", "exec"), ns)
