"""One LoaderProcess feeding several consumer processes, each its shard.

    python examples/loader_ranks.py [--consumers 3] [--dir DIR]

Writes a small HDF5 file, starts one loader process, and starts
``--consumers`` processes (spawn) that each connect with their rank and
stream their shard of the dataset (``world_size`` = the number of
consumers): every block is a zero-copy view of the loader's shared ring.
Each consumer checks its blocks against h5py and reports a row count and a
checksum; the parent checks that the shards cover the blocks once.
"""

import argparse
import multiprocessing
import os
import tempfile

import h5py
import numpy as np

import multiload

BLOCK = 1000


def consumer(loader, rank, results):
    with h5py.File(loader.filename, "r") as f:
        truth = f["/features"]
        rows, checksum, starts = 0, 0.0, []
        with loader.connect(rank) as queue:    # rank's shard: world_size came with the loader
            for guard in queue:
                with guard as block:           # a view of a slot of the loader's shared ring
                    assert np.array_equal(block, truth[guard.start:guard.start + len(block)])
                    rows += len(block)
                    checksum += float(block.sum(dtype=np.float64))
                    starts.append(guard.start)
    results.put((rank, rows, checksum, starts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    folder = args.dir or tempfile.mkdtemp()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "features.h5")
    data = np.random.default_rng(0).standard_normal((30_000, 32)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=data, chunks=(1000, 32), compression="gzip")

    n = args.consumers
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with multiload.LoaderProcess(path, "/features", n_procs=2, block_size=BLOCK, world_size=n) as loader:
        procs = [ctx.Process(target=consumer, args=(loader, rank, results)) for rank in range(n)]
        for p in procs:
            p.start()
        got = sorted(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join()
            assert p.exitcode == 0
    starts = sorted(s for _, _, _, st in got for s in st)
    n_blocks = len(data) // BLOCK
    assert starts == [k * BLOCK for k in range(n * (n_blocks // n))]  # each block once
    for rank, rows, checksum, _ in got:
        print(f"rank {rank}: {rows} rows, checksum {checksum:.3f}")
    print(f"{len(starts)} blocks over {n} consumers, one loader process")


if __name__ == "__main__":
    main()
