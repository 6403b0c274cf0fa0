"""`make demo`: stream a sample HDF5 file with multiload and with h5py.

Writes (once) a sample file into the cache folder with two float32 2-D
datasets of a smooth random walk quantised to a 1/256 grid (like sensor
data; it compresses the way real measurements do, not like zeros or noise):

  /contiguous   256 MiB, contiguous storage
  /deflate      128 MiB raw, chunked, shuffle + deflate level 4

then, for each dataset, checks that every block multiload streams equals
h5py's reading of the same rows, and times one pass of each system over
the warm page cache: multiload's Streamer (queue, n_procs=2) and h5py block
slicing ``dset[i:i + B]`` with the same block size B (1 MiB by default). Prints rows/s, GB/s
and the ratio to h5py.

Usage: python benchmarks/demo.py [--cache DIR] [--repeat N] [--n-procs N]
"""

import argparse
import os
import sys
import time

import numpy as np

ROW = 256                      # float32 values per row: 1 KiB rows
CONTIG_ROWS = 256 * 1024       # 256 MiB
DEFLATE_ROWS = 128 * 1024      # 128 MiB raw
CHUNK_ROWS = 256               # 256 KiB chunks
PIECE_ROWS = 8192              # rows generated and written per step
FILE_NAME = "demo-v1.h5"       # bump the version when the content changes


def progress(label, done, total):
    """One in-place percentage line on a terminal, a final line otherwise."""
    pct = 100 * done // total
    if sys.stdout.isatty():
        end = "\n" if done >= total else ""
        print(f"\r   {label}: {pct:3d}%", end=end, flush=True)
    elif done >= total:
        print(f"   {label}: 100%", flush=True)


class RandomWalk:
    """Rows of a smooth 2-D random walk, generated piece by piece.

    Each row is a random walk along its 256 values that starts where a slow
    walk over the rows is, so neighbouring values in a row and neighbouring
    rows are close; values are quantised to multiples of 1/256.
    """

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.level = 0.0

    def rows(self, n):
        offsets = self.level + np.cumsum(self.rng.normal(0.0, 0.05, n))
        self.level = float(offsets[-1])
        steps = self.rng.normal(0.0, 0.02, (n, ROW))
        walk = np.cumsum(steps, axis=1) + offsets[:, None]
        return (np.round(walk * 256) / 256).astype(np.float32)


def write_sample(path):
    """Write the sample file to path (via a temporary name, so an
    interrupted run never leaves a half-written file that looks cached)."""
    import h5py

    tmp = path + ".part"
    t0 = time.perf_counter()
    with h5py.File(tmp, "w") as f:
        specs = [
            ("contiguous", CONTIG_ROWS, {}),
            ("deflate", DEFLATE_ROWS, dict(chunks=(CHUNK_ROWS, ROW), shuffle=True,
                                           compression="gzip", compression_opts=4)),
        ]
        for seed, (name, n_rows, opts) in enumerate(specs):
            dset = f.create_dataset(name, shape=(n_rows, ROW), dtype=np.float32, **opts)
            walk = RandomWalk(seed)
            label = f"writing /{name} ({n_rows * ROW * 4 >> 20} MiB{', deflate+shuffle' if opts else ''})"
            for i in range(0, n_rows, PIECE_ROWS):
                n = min(PIECE_ROWS, n_rows - i)
                dset[i:i + n] = walk.rows(n)
                progress(label, i + n, n_rows)
    os.replace(tmp, path)
    print(f"   wrote {path} ({os.path.getsize(path) / 2**20:.0f} MiB) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)


def warm(path):
    """Read the whole file once so every measurement starts from the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def verify(path, name, block_size, n_procs):
    """Every block multiload streams (unordered) equals h5py's rows; every
    row is covered exactly once. Returns the number of rows checked."""
    import h5py
    import multiload

    with h5py.File(path, "r") as f:
        truth = f[name][...]
        stored = f[name].id.get_storage_size()
    seen = np.zeros(truth.shape[0] // block_size + 1, dtype=np.int64)
    stream = multiload.Streamer(path)
    with stream.get_queue(name, n_procs=n_procs, block_size=block_size, remainder=True) as q:
        for guard in q:
            with guard as block:
                rows = slice(guard.start, guard.start + block.shape[0])
                if block.dtype != truth.dtype or not np.array_equal(block, truth[rows]):
                    raise SystemExit(f"MISMATCH: /{name} block {guard.index} (rows {rows.start}.."
                                     f"{rows.stop}) differs from h5py")
                seen[guard.index] += 1
    n_blocks = -(-truth.shape[0] // block_size)
    if not (seen[:n_blocks] == 1).all():
        raise SystemExit(f"MISMATCH: /{name}: blocks not streamed exactly once")
    return truth.shape[0], truth.nbytes / stored


def time_multiload(path, name, block_size, n_procs):
    import multiload

    stream = multiload.Streamer(path)
    t0 = time.perf_counter()
    rows = 0
    with stream.get_queue(name, n_procs=n_procs, block_size=block_size, remainder=True) as q:
        for guard in q:
            with guard as block:
                rows += block.shape[0]
    return rows, time.perf_counter() - t0


def time_h5py(path, name, block_size):
    import h5py

    # A chunk cache of 4 MiB holds several chunks (each is 256 KiB).
    with h5py.File(path, "r", rdcc_nbytes=4 << 20, rdcc_nslots=1021) as f:
        dset = f[name]
        n_rows = dset.shape[0]
        t0 = time.perf_counter()
        rows = 0
        for i in range(0, n_rows, block_size):
            rows += dset[i:i + block_size].shape[0]
        return rows, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/multiload"),
                    help="folder for the sample file (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes per system; best is shown")
    ap.add_argument("--block-kib", type=int, default=1024,
                    help="block size in KiB for both systems (default %(default)s: 4 chunks of "
                         "/deflate; multiload's own default for contiguous data is 128 KiB)")
    ap.add_argument("--n-procs", type=int, default=2, help="multiload worker threads (default 2)")
    args = ap.parse_args()

    import h5py
    import multiload

    os.makedirs(args.cache, exist_ok=True)
    path = os.path.join(args.cache, FILE_NAME)
    if os.path.exists(path):
        print(f">> sample file: {path} (cached)")
    else:
        print(f">> writing the sample file {path} (once; later runs reuse it)")
        write_sample(path)

    print(f">> multiload {multiload.__version__} (io: {multiload.io_mode()}, n_procs={args.n_procs}), "
          f"h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs")
    results = []
    row_bytes = ROW * 4
    block_size = args.block_kib * 1024 // row_bytes
    for name in ("contiguous", "deflate"):
        warm(path)
        n, ratio = verify(path, name, block_size, args.n_procs)
        packed = f", stored {ratio:.1f}x smaller" if ratio > 1.05 else ""
        print(f">> /{name}: multiload's blocks equal h5py's ({n} rows of {row_bytes} B{packed}; "
              f"block_size={block_size} rows = {block_size * row_bytes >> 10} KiB)", flush=True)
        best = {}
        for system in ("h5py", "multiload"):
            for _ in range(args.repeat):
                warm(path)
                if system == "h5py":
                    rows, secs = time_h5py(path, name, block_size)
                else:
                    rows, secs = time_multiload(path, name, block_size, args.n_procs)
                if rows != n:
                    raise SystemExit(f"{system} streamed {rows} rows of /{name}, expected {n}")
                best[system] = min(best.get(system, secs), secs)
        for system in ("h5py", "multiload"):
            secs = best[system]
            results.append((system, name, n / secs, n * row_bytes / secs / 1e9, best["h5py"] / secs))

    print()
    print(f"{'system':<10} {'dataset':<11} {'rows/s':>12} {'GB/s':>7} {'vs h5py':>8}")
    for system, name, rps, gbs, ratio in results:
        print(f"{system:<10} {name:<11} {rps:>12,.0f} {gbs:>7.2f} {ratio:>7.2f}x")
    print(f"\n(best of {args.repeat} passes over the warm page cache; GB/s counts decoded bytes)")


if __name__ == "__main__":
    main()
