"""Stress, bounded in count and time: open/stream/close cycles and Reader
requests from 4 threads, data checked, RSS (VmRSS) measured before and
after and required to stay flat within a generous bound. The full counts
of issue 6 run in the `slow` tests; smaller ones run in every pass."""

import gc
import threading

import numpy as np
import pytest

import multiload
import reliability_files as rf
from reliability_files import IO_MODES, faults

#: RSS may grow this much (kB) over a whole stress run: allocator caches
#: and interpreter warm-up, not a leak (a leaked slot ring per cycle would
#: be megabytes per thousand cycles).
RSS_SLACK_KB = 16 * 1024


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    return rf.write_data_file(str(tmp_path_factory.mktemp("stress") / "data.h5"))


def cycles(fn, n, io_mode=None):
    """n open/stream/close cycles over four storages; returns blocks seen."""
    paths = ["contig", "gz", "f32", "table"]
    seen = 0
    for i in range(n):
        q = multiload.Streamer(fn).get_queue(paths[i % 4], n_procs=2, read_ahead=3, block_size=1000,
                                             ordered=True, io_mode=io_mode)
        for g in q:
            with g as block:
                if i % 97 == 0 and paths[i % 4] != "table":
                    assert np.array_equal(block, rf.values()[g.start:g.start + len(block)])
            seen += 1
        q.close()
    return seen


def measure(fn, n, io_mode=None):
    cycles(fn, 50, io_mode)  # warm-up: caches, first imports
    gc.collect()
    before = rf.rss_kb()
    seen = cycles(fn, n, io_mode)
    gc.collect()
    after = rf.rss_kb()
    print(f"\n{n} open/stream/close cycles: {seen} blocks, VmRSS {before} kB -> {after} kB")
    assert seen == n * rf.N // 1000
    assert after - before < RSS_SLACK_KB, (before, after)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("io_mode", IO_MODES)
def test_open_stream_close_cycles(small_file, io_mode):
    measure(small_file, 500, io_mode)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_open_stream_close_10000_cycles(small_file):
    measure(small_file, 10000)


@pytest.mark.timeout(60)
def test_cycles_under_random_faults(small_file):
    """Cycles with a fraction of reads failing: every cycle ends, every
    error is an OSError, RSS stays flat."""
    gc.collect()
    before = rf.rss_kb()
    errors = blocks = 0
    with faults("eio~0.05/9,short~0.2/4,eagain~0.1"):
        for i in range(300):
            q = multiload.Streamer(small_file).get_queue(["contig", "gz"][i % 2], n_procs=2, block_size=500)
            with q:
                got, errs = rf.drain(q)
            assert all(isinstance(e, OSError) for e in errs)
            rf.check_blocks(got, rf.values(), block_size=500)
            errors += len(errs)
            blocks += len(got)
    gc.collect()
    after = rf.rss_kb()
    print(f"\n300 faulty cycles: {blocks} blocks, {errors} injected errors, VmRSS {before} kB -> {after} kB")
    assert errors > 0 and blocks + errors == 300 * rf.N // 500
    assert after - before < RSS_SLACK_KB


def reader_requests(fn, total, n_threads=4, io_mode=None):
    """`total` random requests (rows, slices, fancy indices) from n_threads
    threads on one Reader, each result checked against numpy."""
    truth = rf.values()
    r = multiload.Reader(fn, n_procs=4, io_mode=io_mode)
    dss = [r.get_dataset(p) for p in ("contig", "gz", "f32")]
    failures, counts = [], [0] * n_threads

    def work(t):
        rng = np.random.default_rng(t)
        stages = [ds.create_stage((64, rf.COLS)) for ds in dss]
        try:
            for i in range(total // n_threads):
                k = i % 3
                ds, st = dss[k], stages[k]
                a = int(rng.integers(0, rf.N - 64))
                kind = i % 4
                if kind == 0:
                    key, want = a, truth[a]
                elif kind == 1:
                    n = int(rng.integers(1, 64))
                    key, want = slice(a, a + n), truth[a:a + n]
                elif kind == 2:
                    key, want = slice(a, a + 64, 3), truth[a:a + 64:3]
                else:
                    idx = np.sort(rng.integers(0, rf.N, size=8))
                    key, want = idx, truth[idx]
                got = r.request(ds[key], st).get()
                if not np.array_equal(got, want):
                    failures.append((t, i, key))
                counts[t] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append((t, "exception", repr(e)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(500)
        assert not t.is_alive(), "a reader thread hung"
    r.close(wait=True)
    assert failures == []
    return sum(counts)


def reader_measure(fn, total, io_mode=None):
    reader_requests(fn, 400, io_mode=io_mode)  # warm-up
    gc.collect()
    before = rf.rss_kb()
    done = reader_requests(fn, total, io_mode=io_mode)
    gc.collect()
    after = rf.rss_kb()
    print(f"\n{done} Reader requests in 4 threads: VmRSS {before} kB -> {after} kB")
    assert done == total
    assert after - before < RSS_SLACK_KB, (before, after)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("io_mode", IO_MODES)
def test_reader_requests_4_threads(small_file, io_mode):
    reader_measure(small_file, 8000, io_mode)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_reader_100000_requests_4_threads(small_file):
    reader_measure(small_file, 100000)
