"""Reader throughput: random 256-row batches and single-row latency.

    .venv/bin/python benchmarks/reader_bench.py [--rows 200000] [--seconds 2] [--reps 3]
    .venv/bin/python benchmarks/reader_bench.py --w5 [--cache ~/.cache/multiload]

Default: writes a contiguous and a deflate+shuffle (chunked, 256-row chunks)
file of float32 rows (64 values = 256 B per row) to a temporary directory,
then measures, each the median of --reps runs:

* requests/s for random 256-row batches, indices unsorted and sorted, with
  8 requests in flight (a stage pool) and one at a time - beside h5py fancy
  indexing (increasing unique indices, which it needs) with its default
  chunk cache (1 MiB) and with one as large as ours (64 MiB), and
  numpy.memmap gathering for contiguous data (a reference: no syscalls);
* deflate also with our decoded-chunk cache off (cache_bytes=1): the 64
  batches repeat, so with the cache on most chunks are cache hits and the
  figure measures the cache, off it measures parallel decoding;
* the per-request overhead, submit -> future.get(), for one row;
* 64 one-row requests in flight (batched into shared I/O submissions).

--w5: benchmarks/run.py's W5 workload on its cached files (1 KiB rows;
512 MiB contiguous, 128 MiB deflate+shuffle with 256-row chunks): one
request at a time, batches of 256 distinct random rows given as a list,
sorted and unsorted - beside h5py (sorted for it, put back in order) with
the default chunk cache and rdcc_nbytes of 64 MiB, and numpy.memmap.
"""

import argparse
import os
import statistics
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


def median_rate(fn, seconds, reps):
    return statistics.median(rate(fn, seconds) for _ in range(reps))


def row(name, label, value, unit="requests/s"):
    print(f"{name:9} {label:44} {value:11.0f} {unit}", flush=True)


def h5py_fancy(hf, name, batches):
    h = hf[name]
    k = iter(range(1 << 62))
    return lambda: h[batches[next(k) % len(batches)]]


def main_default(args):
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "bench.h5")
    data = rng.random((args.rows, 64), dtype=np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("contig", data=data)
        f.create_dataset("deflate", data=data, chunks=(256, 64), compression="gzip", shuffle=True)
        offset = f["contig"].id.get_offset()
    batches = [rng.integers(0, args.rows, 256) for _ in range(64)]
    sorted_batches = [np.unique(b) for b in batches]
    print(f"{args.rows} rows x 256 B, batches of 256 random rows, n_procs={args.n_procs}, "
          f"io={multiload.io_mode()}, median of {args.reps} x {args.seconds} s, load {os.getloadavg()[0]:.2f}")
    print(f"{'dataset':9} {'method':44} {'value':>11}")
    mm = np.memmap(path, mode="r", dtype=np.float32, offset=offset, shape=(args.rows, 64))
    for name in ("contig", "deflate", "deflate-nocache"):
        dname = name.split("-")[0]
        cache = 1 if name.endswith("nocache") else None
        with multiload.Reader(path, n_procs=args.n_procs, cache_bytes=cache) as reader:
            ds = reader.get_dataset("/" + dname)
            pool = ds.create_stage_pool(256, 8)
            for label, prep in (("unsorted", lambda b: b), ("sorted", np.sort)):
                it = iter(range(1 << 62))
                futs = []

                def pipelined():
                    # keep up to 8 requests in flight
                    k = next(it)
                    futs.append(reader.request(ds[prep(batches[k % 64])], pool))
                    if len(futs) >= 8:
                        futs.pop(0).get()

                r = median_rate(pipelined, args.seconds, args.reps)
                for f in futs:
                    f.get()
                row(name, f"multiload {label} (8 in flight)", r)
            stage = ds.create_stage(256)
            k = iter(range(1 << 62))
            r = median_rate(lambda: reader.request(ds[batches[next(k) % 64]], stage).get(), args.seconds, args.reps)
            row(name, "multiload unsorted (one at a time)", r)
            if cache:
                st = reader.stats()
                print(f"{'':9} (cache hits {st['cache_hits']}, misses {st['cache_misses']})")
                continue
        for rdcc in (None, 64 << 20):
            kw = {} if rdcc is None else dict(rdcc_nbytes=rdcc, rdcc_nslots=100003)
            with h5py.File(path, "r", **kw) as hf:
                r = median_rate(h5py_fancy(hf, dname, sorted_batches), args.seconds, args.reps)
            row(name, f"h5py fancy, sorted unique, rdcc {'1 MiB (default)' if rdcc is None else '64 MiB'}", r)
        if name == "contig":
            k = iter(range(1 << 62))
            r = median_rate(lambda: mm[batches[next(k) % 64]], args.seconds, args.reps)
            row(name, "numpy.memmap gather (reference)", r)

    with multiload.Reader(path, n_procs=args.n_procs) as reader:
        ds = reader.get_dataset("/contig")
        stage = ds.create_stage(1)
        n = 20000
        res = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            for i in range(n):
                reader.request(ds[i], stage).get()
            res.append((time.perf_counter() - t0) / n)
        print(f"per-request overhead, one row, submit -> get(): {statistics.median(res) * 1e6:.1f} us")
        op = ds[5]
        res = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            for i in range(n):
                reader.request(op, stage).get()
            res.append((time.perf_counter() - t0) / n)
        print(f"  same, expression built once:                  {statistics.median(res) * 1e6:.1f} us")
        stages = [ds.create_stage(1) for _ in range(64)]
        res = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            for k in range(0, n, 64):
                futs = [reader.request(ds[i], s) for i, s in zip(range(k, k + 64), stages)]
                for f in futs:
                    f.get()
            res.append((time.perf_counter() - t0) / n)
        print(f"  64 in flight, per request:                    {statistics.median(res) * 1e6:.1f} us "
              f"({reader.stats().get('batched', 0)} requests read in shared batches)")


def w5_batches(n, count, k, is_sorted, seed=0):
    """As benchmarks/systems.py: distinct random rows, optionally sorted."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        idx = rng.choice(n, size=k, replace=False)
        out.append(np.sort(idx) if is_sorted else idx)
    return out


def main_w5(args):
    import glob

    files = dict(contiguous=sorted(glob.glob(os.path.join(args.cache, "bench-v1-contiguous-*.h5"))),
                 deflate=sorted(glob.glob(os.path.join(args.cache, "bench-v1-deflate-*.h5"))))
    print(f"W5, one request at a time, 256 distinct random rows as a list; n_procs={args.n_procs}, "
          f"io={multiload.io_mode()}, median of {args.reps}, load {os.getloadavg()[0]:.2f}")
    for src, found in files.items():
        if not found:
            print(f"{src}: no cached file in {args.cache} (run benchmarks/run.py once)")
            continue
        path = found[0]
        with h5py.File(path, "r") as f:
            n = f["data"].shape[0]
            offset = f["data"].id.get_offset()
            chunks = f["data"].chunks
        count = args.w5_count if src == "contiguous" else max(3, args.w5_count // 20)
        print(f"-- {src}: {os.path.basename(path)}, {n} rows x 1 KiB, chunks {chunks}, {count} batches")
        for kind in ("sorted", "unsorted"):
            batches = w5_batches(n, count, 256, kind == "sorted")
            res = {}

            def timed(fn):
                out = []
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    fn()
                    out.append(count * 256 / (time.perf_counter() - t0))
                return statistics.median(out)

            def ml():
                with multiload.Reader(path, n_procs=args.n_procs) as reader:
                    ds = reader.get_dataset("/data")
                    stage = ds.create_stage(256)
                    for idx in batches:
                        reader.request(ds[list(int(i) for i in idx)], stage).get()

            res["multiload Reader"] = timed(ml)

            def h5(rdcc):
                def run():
                    kw = {} if rdcc is None else dict(rdcc_nbytes=rdcc, rdcc_nslots=100003)
                    with h5py.File(path, "r", **kw) as f:
                        d = f["data"]
                        for idx in batches:
                            order = np.argsort(idx)
                            got = d[idx[order]]
                            out = np.empty_like(got)
                            out[order] = got
                return run

            res["h5py fancy, rdcc 1 MiB (default)"] = timed(h5(None))
            res["h5py fancy, rdcc 64 MiB"] = timed(h5(64 << 20))
            if offset is not None:
                def mmap():
                    mm = np.memmap(path, mode="r", dtype="<f4", offset=offset, shape=(n, 256))
                    for idx in batches:
                        mm[idx]
                res["numpy.memmap gather (reference)"] = timed(mmap)
            base = res["multiload Reader"]
            for label, v in res.items():
                ratio = "" if label.startswith("multiload") else f"  multiload = {base / v:.2f}x"
                print(f"   {kind:8} {label:36} {v:12.0f} rows/s{ratio}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-procs", type=int, default=2)
    ap.add_argument("--w5", action="store_true", help="run.py's W5 on its cached files")
    ap.add_argument("--w5-count", type=int, default=200, help="W5 batches (contiguous; deflate: /20, >= 3)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/multiload"))
    args = ap.parse_args()
    if args.w5:
        main_w5(args)
    else:
        main_default(args)


if __name__ == "__main__":
    main()
