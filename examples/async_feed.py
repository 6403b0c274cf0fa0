"""asyncio with multiload: a Streamer queue in ``async for``, a thousand
Reader requests awaited at once, and a FileLoader awaited -- all on one
event loop, woken by the C core's event fds, with no thread per wait.

    python examples/async_feed.py [--dir DIR] [--uvloop]

Writes a small HDF5 file (and a few plain files) into DIR, checks every
value against h5py and the files' bytes, and prints what it did.
"""

import argparse
import asyncio
import os
import tempfile
import threading

import h5py
import numpy as np

import multiload


def make_files(d):
    fn = os.path.join(d, "feed.h5")
    x = np.arange(50_000 * 8, dtype="f4").reshape(-1, 8)
    with h5py.File(fn, "w") as f:
        f.create_dataset("x", data=x, chunks=(1000, 8), compression="gzip")
    paths = []
    for i in range(20):
        p = os.path.join(d, f"blob{i}.bin")
        with open(p, "wb") as f:
            f.write(os.urandom(4096 + i))
        paths.append(p)
    return fn, x, paths


async def stream_sum(fn):
    """Sum a dataset block by block: ``async for`` over a queue."""
    total = 0.0
    async with multiload.Streamer(fn).get_queue("x", n_procs=2, block_size=5000) as q:
        async for guard in q:
            with guard as block:
                total += float(block.sum(dtype="f8"))
    return total


async def random_rows(fn, rows):
    """Many requests in flight at once, each awaited."""
    async with multiload.Reader(fn, n_procs=2) as reader:
        x = reader.get_dataset("x")
        before = threading.active_count()
        out = await asyncio.gather(*(reader.request(x[int(i)], x.create_stage(1)) for i in rows))
        assert threading.active_count() <= before, "awaiting requests must not start threads"
        return np.stack(out)


async def load_files(paths):
    """Whole files through a FileLoader, awaited."""
    got = {}
    async with multiload.FileLoader(queue_depth=4, max_file_size=1 << 16, n_workers=1) as loader:
        loader.start()
        worker = loader.get_worker_context(0)
        todo = list(paths)
        while len(got) < len(paths):
            while todo and worker.request(todo[0]):
                todo.pop(0)
            with await worker.wait_get_async(timeout=60) as entry:
                got[entry.get_filepath()] = bytes(entry.array)
    return got


async def main(d):
    fn, x, paths = make_files(d)
    rows = np.random.default_rng(0).integers(0, len(x), 1000)
    total, picked, files = await asyncio.gather(stream_sum(fn), random_rows(fn, rows), load_files(paths))
    assert np.isclose(total, float(x.sum(dtype="f8")))
    with h5py.File(fn, "r") as f:
        assert (picked == f["x"][()][rows]).all()
    for p in paths:
        with open(p, "rb") as fh:
            assert files[p] == fh.read()
    print(f"streamed {len(x)} rows, awaited {len(rows)} requests at once, loaded {len(files)} files: ok")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the example's files (default: a temporary directory)")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop

        uvloop.install()
    if a.dir:
        os.makedirs(a.dir, exist_ok=True)
        asyncio.run(main(a.dir))
    else:
        with tempfile.TemporaryDirectory() as d:
            asyncio.run(main(d))
