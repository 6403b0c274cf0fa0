"""Native decoding of hdf5plugin's filters against the slow path, on the same data.

For each filter multiload decodes natively (zstd, lz4, bzip2, bitshuffle
plain / LZ4 / zstd), the file holds two datasets of the same float32 data:
the filtered dataset (read natively, 2 workers) and a virtual dataset
mapping all of it, which multiload reads through the slow path: H5Dread
under the HDF5 lock, HDF5 1.10 decoding the same chunks with hdf5plugin's
plugin (HDF5_PLUGIN_PATH set here: multiload finds hdf5plugin's folder by
itself for the filtered datasets it opens, not for a virtual dataset's
sources, which only HDF5 opens). The data decoded per second is printed for both
(page cache warm, best of --repeat).

    .venv/bin/python benchmarks/filters.py [--mb 64] [--repeat 3] [--dir /tmp]
"""
import argparse
import os
import sys
import tempfile
import time
import warnings

import h5py
import hdf5plugin
import numpy as np
# A virtual dataset's sources are HDF5's to open: multiload never sees their filters, so it does not
# look for hdf5plugin's folder itself here (it does for a filtered dataset it opens).
os.environ["HDF5_PLUGIN_PATH"] = hdf5plugin.PLUGIN_PATH
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree's multiload
import multiload  # noqa: E402

FILTERS = {
    "zstd": hdf5plugin.Zstd(clevel=3),
    "lz4": hdf5plugin.LZ4(),
    "bzip2": hdf5plugin.BZip2(blocksize=9),
    "bitshuffle": hdf5plugin.Bitshuffle(cname="none"),
    "bitshuffle+lz4": hdf5plugin.Bitshuffle(cname="lz4"),
    "bitshuffle+zstd": hdf5plugin.Bitshuffle(cname="zstd"),
}
CHUNK = 65536  # float32 elements: 256 KiB chunks


def write(fn, data):
    with h5py.File(fn, "w") as f:
        for name, flt in FILTERS.items():
            f.create_dataset(name, data=data, chunks=(CHUNK,), **flt)
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[:] = h5py.VirtualSource(".", name, shape=data.shape)
            f.create_virtual_dataset(f"{name}_slow", layout)


def stream_seconds(fn, path, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", multiload.SlowPathWarning)
            q = multiload.Streamer(fn).get_queue(path, n_procs=2, block_size=CHUNK, remainder=True)
        with q:
            for g in q:
                g.release()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=64, help="MB of float32 data per dataset")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    a = ap.parse_args()
    n = a.mb * 2**20 // 4
    rng = np.random.default_rng(0)
    # A noisy smooth signal: compresses by 1.3-3x depending on the filter.
    data = (np.cumsum(rng.standard_normal(n)) * 8).round().astype("<f4")
    fn = os.path.join(a.dir, "multiload-filters-bench.h5")
    write(fn, data)
    try:
        with open(fn, "rb") as f:  # page cache warm
            while f.read(1 << 24):
                pass
        mb = data.nbytes / 1e6
        print(f"{a.mb} MiB of float32 per dataset, {CHUNK * 4 // 1024} KiB chunks, best of {a.repeat}")
        print(f"{'filter':<17} {'ratio':>6} {'native MB/s (2 workers)':>24} {'slow path MB/s':>15} {'speed-up':>9}")
        for name in FILTERS:
            with h5py.File(fn) as f:
                stored = sum(f[name].id.get_chunk_info(i).size for i in range(f[name].id.get_num_chunks()))
            native = mb / stream_seconds(fn, name, a.repeat)
            slow = mb / stream_seconds(fn, f"{name}_slow", a.repeat)
            print(f"{name:<17} {data.nbytes / stored:>6.2f} {native:>24.0f} {slow:>15.0f} {native / slow:>8.1f}x")
    finally:
        os.unlink(fn)


if __name__ == "__main__":
    main()
