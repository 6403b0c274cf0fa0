"""W14 (issue 16): two streams with I/O budgets 3:1 sharing the disk.

Two Streamer queues over W1's file (contiguous float32, 1 KiB rows; W14:
warm, so "the disk" is the page cache; W14 direct: the queues read with
O_DIRECT, so every byte comes from the disk, whatever the page cache holds),
each with a Budget of its own: HIGH_RATE and LOW_RATE bytes per second,
3:1, whose sum is far below what one unbudgeted stream reads here (the
third system of the workload measures that). Both run at once in one
process, each consumed by a thread of its own (cyclic queues, 1 MiB
blocks, N_PROCS worker threads each) for RUN_S seconds. The rate of a
stream is what its consumer received in the window [SKIP_S, RUN_S): the
first second is each bucket's burst (a bucket starts full with one
second of its rate), which would add the same 3:1 but is not the rate.

Each of the two budgeted systems is a run of both streams that reports
its own stream, so run.py's ratio of the two medians is the achieved
ratio; every run also records the ratio inside it (``ratio``) and the
budget's own stats (throttled seconds).

run.py runs this file as ``python benchmarks/budgets.py '<spec>'`` and
reads the ``@@RESULT`` line; ``workloads()`` is W14's part of its plan.
"""

import json
import os
import resource
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCK_BYTES = 1 << 20
N_PROCS = 2
HIGH_RATE = 300e6  # bytes/s
LOW_RATE = 100e6
RUN_S = 6.0
SKIP_S = 1.5

HIGH = "stream A, Budget(300 MB/s)"
LOW = "stream B, Budget(100 MB/s), beside A"
FREE = "one stream, no budget (what the disk does)"

DIRECT = "W14 direct"  # the same from the disk itself: O_DIRECT reads, no page cache

TARGETS = [
    ("W14 two streams with budgets 3:1: achieved ratio ≥ 2.7 (within 10 % of 3)", "W14", HIGH, LOW, ">=", 2.7),
    ("W14 two streams with budgets 3:1: achieved ratio ≤ 3.3 (within 10 % of 3)", "W14", HIGH, LOW, "<=", 3.3),
    ("W14 direct (O_DIRECT, from the disk): achieved ratio ≥ 2.7", DIRECT, HIGH, LOW, ">=", 2.7),
    ("W14 direct (O_DIRECT, from the disk): achieved ratio ≤ 3.3", DIRECT, HIGH, LOW, "<=", 3.3),
]


def workloads(paths, py_entry, Workload, block_of):
    """W14's workload for run.py's plan."""
    path = paths["w1"]
    _, layout = block_of(path, "/data")
    base = dict(file=path, path="/data", block=max(1, BLOCK_BYTES // layout.row_bytes))
    here = os.path.abspath(__file__)
    ml = ["multiload", "numpy"]
    out = []
    for key, direct, how in (("W14", False, "warm"), (DIRECT, True, "direct=True (O_DIRECT: every read from the disk)")):
        b = dict(base, direct=direct)
        out.append(Workload(key, f"two cyclic streams of W1's file at once, Budgets of {HIGH_RATE / 1e6:.0f} and "
                                 f"{LOW_RATE / 1e6:.0f} MB/s (3:1), 1 MiB blocks, {N_PROCS} worker threads each, "
                                 f"{how}; rates over [{SKIP_S}, {RUN_S}) s", path, [
            py_entry(HIGH, dict(b, func="pair", report="high"), imports=ml, role="multiload", script=here,
                     note="both streams run; this row is stream A's rate"),
            py_entry(LOW, dict(b, func="pair", report="low"), imports=ml, role="multiload", script=here,
                     note="both streams run; this row is stream B's rate"),
            py_entry(FREE, dict(b, func="free"), imports=ml, role="reference", script=here,
                     note="the same queue without a budget, alone")],
            warm=not direct, ref=HIGH))
    return out


# ---------------------------------------------------------------- one run (a process of its own)


def _cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _consume(q, t0, counts, stop):
    """Take blocks until stop; counts[0] bytes before SKIP_S, counts[1] in the window."""
    while not stop.is_set():
        g = q.get(timeout=30)
        with g as block:
            n = block.nbytes
        t = time.monotonic() - t0
        if t < SKIP_S:
            counts[0] += n
        elif t < RUN_S:
            counts[1] += n


def run(spec):
    import multiload

    budgets = []
    if spec["func"] == "pair":
        budgets = [multiload.Budget(max_bytes_per_s=HIGH_RATE), multiload.Budget(max_bytes_per_s=LOW_RATE)]
        streams = [multiload.Streamer(spec["file"], budget=b) for b in budgets]
    else:
        streams = [multiload.Streamer(spec["file"])]
    c0 = _cpu_self()
    t0 = time.monotonic()
    queues = [s.get_queue(spec["path"], n_procs=N_PROCS, block_size=spec["block"], cyclic=True,
                          direct=bool(spec.get("direct"))) for s in streams]
    counts = [[0, 0] for _ in queues]
    stop = threading.Event()
    threads = [threading.Thread(target=_consume, args=(q, t0, c, stop)) for q, c in zip(queues, counts)]
    for t in threads:
        t.start()
    time.sleep(RUN_S)
    stop.set()
    for t in threads:
        t.join()
    cpu = _cpu_self() - c0
    stats = [q.stats().get("budget") for q in queues]
    for q in queues:
        q.close()
    window = RUN_S - SKIP_S
    k = 1 if spec.get("report") == "low" else 0
    row_bytes = BLOCK_BYTES // spec["block"]
    got = counts[k][1]
    out = dict(rows=got // row_bytes, bytes=got, seconds=window, first=None, cpu=cpu,
               rates=[c[1] / window for c in counts], burst_bytes=[c[0] for c in counts])
    if len(counts) == 2:
        out["ratio"] = counts[0][1] / counts[1][1] if counts[1][1] else None
        out["throttled_seconds"] = [s["throttled_seconds"] for s in stats]
        out["budget_bytes_per_s"] = [s["bytes_per_s"] for s in stats]
    return out


def main():
    spec = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(HERE))  # this checkout's multiload
    for name in spec.get("imports", ()):
        try:
            __import__(name)
        except ImportError:
            pass
    try:
        out = run(spec)
    except Exception as e:  # reported, never hidden
        out = dict(error=f"{type(e).__name__}: {e}")
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write("\n@@RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
