"""W12 (issue 15): two consumer processes on one LoaderProcess, beside two
processes with a Streamer each and one in-process Streamer, same data.

The data is W1's file (contiguous float32, 1 KiB rows, warm), read in
1 MiB blocks. The two-consumer setups split it as data-parallel ranks do
(``world_size=2``, rank 0 and 1: every block once between them); the
in-process Streamer reads all of it. Each run makes PASSES passes (a new
queue per pass, as epochs do), so a run lasts about a second. Consumer processes are started
(spawn) and have imported everything before the clock; each opens its
queue when the clock starts and streams its share, so every setup pays
for starting its streams.

CPU is what the streaming costs, summed over every process involved:
each consumer's own CPU time over its streaming, plus the loader
process's over the same span (from /proc/<pid>/stat), not the start-up
of interpreters. run.py divides it by the bytes delivered (CPU s/GB).

run.py runs this file as ``python benchmarks/loader_process.py '<spec>'``
and reads the ``@@RESULT`` line; ``workloads()`` is W12's part of its plan.
"""

import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCK_BYTES = 1 << 20
PASSES = 8  # passes (epochs) over the file per run: a new queue each, as a training loop makes them
N_PROCS = 2  # worker threads per stream, everywhere

LOADER = "2 consumers, one LoaderProcess"
SEPARATE = "2 processes, a Streamer each"
SINGLE = "1 in-process Streamer"

TARGETS = [
    ("W12 two consumers on one loader ≥ 0.9× one in-process Streamer", "W12", LOADER, SINGLE, ">=", 0.9),
    ("W12 two consumers on one loader: less CPU than two Streamers", "W12", LOADER, "cpu of " + SEPARATE,
     "<=", 1.0),
]


def workloads(paths, py_entry, Workload, block_of):
    """W12's workload for run.py's plan."""
    path = paths["w1"]
    _, layout = block_of(path, "/data")
    base = dict(file=path, path="/data", block=max(1, BLOCK_BYTES // layout.row_bytes))
    here = os.path.abspath(__file__)
    ml = ["multiload", "numpy"]
    return [Workload("W12", "two consumer processes, shards of W1's file (ranks 0 and 1 of 2), 1 MiB blocks, "
                            f"{N_PROCS} worker threads per stream, warm", path, [
        py_entry(LOADER, dict(base, func="loader"), imports=ml, role="multiload", script=here,
                 note="one loader process serving both consumers' streams from shared memfd rings"),
        py_entry(SEPARATE, dict(base, func="separate"), imports=ml, role="multiload", script=here,
                 note="each consumer process runs its own Streamer on its shard"),
        py_entry(SINGLE, dict(base, func="single"), imports=ml, role="multiload", script=here,
                 note="one process streams the whole file (the aggregate to match)")],
        ref=LOADER)]


# ---------------------------------------------------------------- one run (a process of its own)


def _cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_of(pid):
    """CPU seconds (user + system) of process pid so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stream(queue):
    import multiload
    rows = 0
    while True:
        g = queue.get()
        if g is multiload.QueueClosed:
            return rows
        rows += g.rows
        g.release()


def _consumer(kind, spec, rank, go, out):
    """A consumer process: wait for the clock, open the queue, stream it."""
    try:
        import multiload
        target = multiload.Streamer(spec["file"]) if kind == "separate" else spec["loader"]
        go.wait()
        c0, rows = _cpu_self(), 0
        for _ in range(spec.get("passes", PASSES)):
            if kind == "separate":
                q = target.get_queue(spec["path"], n_procs=N_PROCS, block_size=spec["block"], rank=rank,
                                     world_size=2)
            else:
                q = target.connect(rank)
            with q:
                rows += _stream(q)
        out.put((rows, _cpu_self() - c0, time.monotonic()))
    except BaseException as e:  # the run reports it
        out.put(("error", f"consumer {rank}: {type(e).__name__}: {e}", 0))


def run_two(spec, kind):
    import multiprocessing

    import multiload
    ctx = multiprocessing.get_context("spawn")
    loader = None
    if kind == "loader":
        loader = multiload.LoaderProcess(spec["file"], spec["path"], n_procs=N_PROCS, block_size=spec["block"],
                                         world_size=2)
        spec = dict(spec, loader=loader)
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_consumer, args=(kind, spec, r, go, out)) for r in range(2)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # the consumers import and wait on `go`; the clock starts when they may read
    loader_cpu0 = _cpu_of(loader.pid) if loader else 0.0
    t0 = time.monotonic()
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for r in results:
        if r[0] == "error":
            raise RuntimeError(r[1])
    t1 = max(r[2] for r in results)
    cpu = sum(r[1] for r in results) + (_cpu_of(loader.pid) - loader_cpu0 if loader else 0.0)
    for p in procs:
        p.join(60)
    if loader:
        loader.close()
    import numpy as np
    row_bytes = int(np.dtype("<f4").itemsize * 256)
    rows = sum(r[0] for r in results)
    return dict(rows=rows, bytes=rows * row_bytes, seconds=t1 - t0, first=None, cpu=cpu)


def run_single(spec):
    import multiload
    s = multiload.Streamer(spec["file"])
    c0, t0, rows = _cpu_self(), time.monotonic(), 0
    for _ in range(spec.get("passes", PASSES)):
        with s.get_queue(spec["path"], n_procs=N_PROCS, block_size=spec["block"]) as q:
            rows += _stream(q)
            row_bytes = q.dtype.itemsize * int(q.shape[1])
    secs, cpu = time.monotonic() - t0, _cpu_self() - c0
    return dict(rows=rows, bytes=rows * row_bytes, seconds=secs, first=None, cpu=cpu)


def main():
    spec = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(HERE))  # this checkout's multiload (spawned consumers inherit the path)
    for name in spec.get("imports", ()):
        try:
            __import__(name)
        except ImportError:
            pass
    try:
        func = spec["func"]
        out = run_single(spec) if func == "single" else run_two(spec, func)
    except Exception as e:  # reported, never hidden
        out = dict(error=f"{type(e).__name__}: {e}")
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write("\n@@RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
