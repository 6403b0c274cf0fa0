"""Layout 4 chunk indices: open + stream a 200 000 x 64 float32 dataset in
8-row chunks (25 000 chunks) written with libver='latest' -- fixed array,
extensible array (maxshape (None, 64)), v2 B-tree (maxshape (None, None))
-- against h5py's d[i:i+block] loop; and the one-pass chunk table's cost
(open, walk, check against HDF5) at 10^3..10^6 chunks.
Run: .venv/bin/python benchmarks/chunk_index4.py [--dir D] [--scaling]"""
import argparse, os, time
import numpy as np, h5py, multiload

p = argparse.ArgumentParser()
p.add_argument("--dir", default="/tmp/ml_bench_index4")
p.add_argument("--scaling", action="store_true")
p.add_argument("--block", type=int, default=256)
a = p.parse_args()
os.makedirs(a.dir, exist_ok=True)
fn = os.path.join(a.dir, "latest.h5")
if not os.path.exists(fn):
    data = np.random.default_rng(0).random((200_000, 64), dtype=np.float32)
    with h5py.File(fn, "w", libver="latest") as f:
        for name, ms in (("farray", None), ("earray", (None, 64)), ("btree2", (None, None))):
            f.create_dataset(name, data=data, chunks=(8, 64), maxshape=ms)

def best(fn_, reps=3):
    return min(fn_() for _ in range(reps))

def t_ml(path):
    t = time.perf_counter()
    s = multiload.Streamer(fn)
    with s.get_queue(path, block_size=a.block, n_procs=2) as q:
        for g in q:
            with g as b:
                pass
    return time.perf_counter() - t

def t_h5(path):
    t = time.perf_counter()
    with h5py.File(fn, "r") as f:
        d = f[path]
        for i in range(0, d.shape[0] - a.block + 1, a.block):
            d[i:i + a.block]
    return time.perf_counter() - t

for path in ("farray", "earray", "btree2"):
    state = multiload._core._chunk_table_state(fn, path) if hasattr(multiload._core, "_chunk_table_state") else "-"
    print(f"{path:7s} multiload {best(lambda: t_ml(path)):.3f} s   h5py {best(lambda: t_h5(path)):.3f} s   table {state}")

if a.scaling:
    for n in (10**3, 10**4, 10**5, 10**6):
        sfn = os.path.join(a.dir, f"scale{n}.h5")
        if not os.path.exists(sfn):
            with h5py.File(sfn, "w", libver="latest") as f:
                f.create_dataset("d", data=np.arange(n * 4, dtype=np.float32).reshape(n, 4), chunks=(1, 4))
        def t_open():
            t = time.perf_counter()
            multiload._core._chunk_table_state(sfn, "d")
            return time.perf_counter() - t
        print(f"{n:8d} chunks: open + one-pass table {best(t_open):.4f} s")
