"""Reader throughput: random 256-row batches and single-row latency.

    .venv/bin/python benchmarks/reader_bench.py [--rows 200000] [--seconds 2]

Writes a contiguous and a deflate+shuffle (chunked) file of float32 rows
(64 values = 256 B per row) to a temporary directory, then measures:

* requests/s for random 256-row batches, indices unsorted and sorted, with
  several requests in flight (a stage pool of 8) - beside h5py fancy
  indexing, which needs increasing indices (we sort them for it);
* the per-request overhead, submit -> future.get(), for one row.
"""

import argparse
import os
import tempfile
import time

import h5py
import numpy as np

import multiload


def rate(fn, seconds):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--n-procs", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "bench.h5")
    data = rng.random((args.rows, 64), dtype=np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("contig", data=data)
        f.create_dataset("deflate", data=data, chunks=(256, 64), compression="gzip", shuffle=True)
    batches = [rng.integers(0, args.rows, 256) for _ in range(64)]
    print(f"{args.rows} rows x 256 B, batches of 256 random rows, n_procs={args.n_procs}, "
          f"io={multiload.io_mode()}")
    print(f"{'dataset':9} {'method':34} {'requests/s':>11}")
    with multiload.Reader(path, n_procs=args.n_procs) as reader, h5py.File(path, "r") as hf:
        for name in ("contig", "deflate"):
            ds = reader.get_dataset("/" + name)
            pool = ds.create_stage_pool(256, 8)
            for label, prep in (("unsorted", lambda b: b), ("sorted", np.sort)):
                it = iter(range(1 << 62))

                def pipelined():
                    # keep up to 8 requests in flight
                    k = next(it)
                    futs.append(reader.request(ds[prep(batches[k % 64])], pool))
                    if len(futs) >= 8:
                        futs.pop(0).get()

                futs = []
                r = rate(pipelined, args.seconds)
                for f in futs:
                    f.get()
                print(f"{name:9} {'multiload ' + label + ' (8 in flight)':34} {r:11.0f}")
            stage = ds.create_stage(256)
            r = rate(lambda: reader.request(ds[batches[int(time.perf_counter_ns()) % 64]], stage).get(),
                     args.seconds)
            print(f"{name:9} {'multiload unsorted (one at a time)':34} {r:11.0f}")
            h = hf[name]
            sorted_batches = [np.unique(b) for b in batches]
            k = iter(range(1 << 62))
            r = rate(lambda: h[sorted_batches[next(k) % 64]], args.seconds)
            print(f"{name:9} {'h5py fancy (sorted+unique indices)':34} {r:11.0f}")
        ds = reader.get_dataset("/contig")
        stage = ds.create_stage(1)
        n = 20000
        t0 = time.perf_counter()
        for i in range(n):
            reader.request(ds[i], stage).get()
        dt = (time.perf_counter() - t0) / n
        print(f"per-request overhead, one row, submit -> get(): {dt * 1e6:.1f} us")
        op = ds[5]
        t0 = time.perf_counter()
        for i in range(n):
            reader.request(op, stage).get()
        dt2 = (time.perf_counter() - t0) / n
        print(f"  same, expression built once:                  {dt2 * 1e6:.1f} us")


if __name__ == "__main__":
    main()
