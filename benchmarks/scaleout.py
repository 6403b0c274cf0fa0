"""W9 (issue 14): a reduction on Dask and on Ray, multiload beside the h5py path.

The reduction is the sum and the mean over axis 0 of W3's file (deflate +
shuffle, 256-row chunks of 1 KiB rows), read in blocks of BLOCK_ROWS rows,
several blocks per file. Each side runs on the same engine, in a fresh
process per run:

- Dask, threaded scheduler: ``multiload.dask.from_hdf5`` vs
  ``dask.array.from_array(h5py_dataset, chunks=same)``;
- Dask, a ``LocalCluster(processes=True, n_workers=2, threads_per_worker=1)``
  started before the clock: the same two arrays (distributed pickles the
  h5py dataset as its file name and path and reopens it on the worker).
  Both Dask runs first sum the first two blocks, untimed, so the file is
  open (and the pools started) where the reduction reads;
- Ray Data, ``ray.init(num_cpus=2)`` before the clock: ``multiload.ray.read_hdf5``
  vs what users do today, ``ray.data.range(blocks)`` with h5py reading a
  block of rows in ``map_batches``; both reduced by the same ``map_batches``
  (per-block sums) and a sum of those on the driver.

run.py runs this file as ``python benchmarks/scaleout.py '<spec json>'``
and reads the ``@@RESULT`` line; ``workloads()`` is W9's part of its plan.
"""

import json
import os
import resource
import sys
import time

BLOCK_ROWS = 16384  # 16 MiB of 1 KiB rows: 64 HDF5 chunks; the quick W3 file holds 8 blocks
HERE = os.path.dirname(os.path.abspath(__file__))
REF = "multiload"  # the system each W9 table divides by (its role is multiload)

TARGETS = [
    ("W9 ≥ 3× h5py, Dask threaded scheduler", "W9 dask threads", "multiload.dask.from_hdf5",
     "dask.array.from_array(h5py)", ">=", 3.0),
    ("W9 ≥ 3× h5py, Dask LocalCluster (2 processes)", "W9 dask distributed", "multiload.dask.from_hdf5",
     "dask.array.from_array(h5py)", ">=", 3.0),
    ("W9 ≥ 3× h5py, Ray Data", "W9 ray", "multiload.ray.read_hdf5", "h5py in map_batches", ">=", 3.0),
]


def workloads(paths, py_entry, Workload):
    """W9's workloads for run.py's plan."""
    path = paths["w3"]
    base = dict(file=path, path="/data", block=BLOCK_ROWS)
    ml, h5 = ["multiload", "numpy", "dask.array"], ["h5py", "numpy", "dask.array"]
    here = os.path.abspath(__file__)
    out = []
    for key, sched, title in (("W9 dask threads", "threads", "threaded scheduler"),
                              ("W9 dask distributed", "distributed", "LocalCluster, 2 worker processes × 1 thread")):
        out.append(Workload(key, f"Dask sum + mean(axis=0) of W3's deflate+shuffle file, blocks of {BLOCK_ROWS} rows, "
                                 f"{title}", path, [
            py_entry("multiload.dask.from_hdf5", dict(base, func="dask", reader="multiload", scheduler=sched),
                     imports=ml + ["distributed"] * (sched == "distributed"), role="multiload", script=here),
            py_entry("dask.array.from_array(h5py)", dict(base, func="dask", reader="h5py", scheduler=sched),
                     imports=h5 + ["distributed"] * (sched == "distributed"), script=here)],
            ref="multiload.dask.from_hdf5"))
    out.append(Workload("W9 ray", f"Ray Data sum + mean(axis=0) of W3's deflate+shuffle file, blocks of {BLOCK_ROWS} "
                                  "rows, ray.init(num_cpus=2)", path, [
        py_entry("multiload.ray.read_hdf5", dict(base, func="ray", reader="multiload"), imports=["multiload", "ray"],
                 role="multiload", script=here),
        py_entry("h5py in map_batches", dict(base, func="ray", reader="h5py"), imports=["h5py", "ray"],
                 script=here)],
        ref="multiload.ray.read_hdf5"))
    return out


# ---------------------------------------------------------------- one run (a process of its own)


def _shape(spec):
    import h5py

    with h5py.File(spec["file"], "r") as f:
        d = f[spec["path"]]
        return d.shape, d.dtype, d.chunks


def run_dask(spec):
    import dask
    import dask.array as da
    import numpy as np

    shape, dtype, _ = _shape(spec)
    chunks = (spec["block"], shape[1])
    client = cluster = None
    if spec["scheduler"] == "distributed":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
        mod = "multiload" if spec["reader"] == "multiload" else "h5py"
        client.run(__import__, mod)  # each worker imports its reader before the clock
    def array():
        if spec["reader"] == "multiload":
            import multiload.dask

            return multiload.dask.from_hdf5(spec["file"], spec["path"], chunks=chunks)
        import h5py

        return da.from_array(h5py.File(spec["file"], "r")[spec["path"]], chunks=chunks)  # what users write

    # Warm-up, untimed: the file opened and the first two blocks read where they will be read
    # (every worker, or the scheduler's threads), so the clock measures the reduction.
    w = array()[:2 * spec["block"]].sum()
    client.compute(w, sync=True) if client is not None else w.compute(scheduler="threads")
    t0 = time.perf_counter()
    x = array()
    if client is not None:
        total, mean = client.compute([x.sum(axis=0), x.mean(axis=0)], sync=True)
    else:
        total, mean = dask.compute(x.sum(axis=0), x.mean(axis=0), scheduler="threads")
    secs = time.perf_counter() - t0
    if client is not None:
        client.close()
        cluster.close()
    return _result(shape, dtype, secs, check=float(total.sum()), check_mean=float(mean[0]))


def _partial_sums(batch):
    import numpy as np

    d = batch["data"]
    return {"s": d.sum(axis=0, dtype=np.float64)[None], "n": np.array([d.shape[0]])}


def _h5py_blocks(file, path, block):
    """What users write today: a map_batches function that reads block i's rows with h5py."""

    def read(batch):
        import h5py
        import numpy as np

        with h5py.File(file, "r") as f:
            d = f[path]
            return {"data": np.concatenate([d[i * block:(i + 1) * block] for i in batch["id"]])}

    return read


def run_ray(spec):
    import numpy as np
    import ray

    shape, dtype, _ = _shape(spec)
    n_blocks = -(-shape[0] // spec["block"])
    root = os.path.dirname(HERE)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    # Warm-up, untimed: Ray Data's machinery started and each worker has imported the reader.
    mod = "multiload.ray" if spec["reader"] == "multiload" else "h5py"
    ray.data.range(4, override_num_blocks=2).map_batches(lambda b: (__import__(mod), b)[1]).take_all()
    t0 = time.perf_counter()
    if spec["reader"] == "multiload":
        import multiload.ray

        ds = multiload.ray.read_hdf5(spec["file"], spec["path"], override_num_blocks=n_blocks)
    else:
        ds = ray.data.range(n_blocks, override_num_blocks=n_blocks).map_batches(
            _h5py_blocks(spec["file"], spec["path"], spec["block"]), batch_size=1)
    parts = ds.map_batches(_partial_sums, batch_size=None).take_all()
    total = np.sum([p["s"] for p in parts], axis=0)
    n = sum(int(p["n"]) for p in parts)
    secs = time.perf_counter() - t0
    ray.shutdown()
    assert n == shape[0], (n, shape)
    return _result(shape, dtype, secs, check=float(total.sum()), check_mean=float(total[0] / n))


def _result(shape, dtype, secs, **extra):
    row = dtype.itemsize * int(shape[1])
    return dict(rows=int(shape[0]), bytes=int(shape[0]) * row, seconds=secs, first=None, **extra)


def main():
    spec = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(HERE))  # this checkout's multiload (the workers inherit the path)
    for name in spec.get("imports", ()):
        try:
            __import__(name)
        except ImportError:
            pass
    r0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = {"dask": run_dask, "ray": run_ray}[spec["func"]](spec)
    except Exception as e:  # reported, never hidden
        out = dict(error=f"{type(e).__name__}: {e}")
    r1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # A cluster's workers are not this process's children (Ray's raylet, distributed's nannies'):
    # CPU and RSS are this process's only on the threaded scheduler.
    if spec["func"] == "dask" and spec["scheduler"] == "threads":
        out["cpu"] = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
                      + c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime)
        out["rss_mib"] = r1.ru_maxrss / 1024
    sys.stdout.write("\n@@RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
