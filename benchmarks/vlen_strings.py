"""Variable-length strings: 1M UTF-8 strings (gzip chunks of 65536) read whole by h5py and by
multiload.Reader (best of 3). Run: .venv/bin/python benchmarks/vlen_strings.py"""
import time, h5py, numpy as np, multiload
import os, tempfile
fn = os.path.join(tempfile.mkdtemp(), "vlbench.h5")
n = 1_000_000
with h5py.File(fn, "w") as f:
    f.create_dataset("s", data=np.array([f"item-{i}-é" for i in range(n)], dtype=object), dtype=h5py.string_dtype(),
                     chunks=(65536,), compression="gzip")
for name, fn_read in [("h5py", lambda: h5py.File(fn)["s"][:]),
                      ("multiload", lambda: (lambda r: r.read(r.get_dataset("s")[:]))(multiload.Reader(fn, n_procs=1)))]:
    best = 1e9
    for _ in range(3):
        t = time.perf_counter(); a = fn_read(); best = min(best, time.perf_counter() - t)
    print(f"{name}: {n} strings in {best:.3f} s ({n / best / 1e6:.2f} M strings/s)")
