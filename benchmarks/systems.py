"""One measurement of one system, in a process of its own.

    python benchmarks/systems.py '{"system": "h5py-slice", "file": ..., ...}'

run.py starts this script once per run, so that peak RSS and CPU time
belong to one system alone, and prints what it measured as one JSON line
on stdout. It must import under the multitables venv too (numpy<2, no
multiload), so every library is imported inside the function that uses it.

Every function returns a dict with at least ``seconds`` (wall time of the
timed part), ``rows`` and ``bytes`` delivered (decoded bytes), and where
the system hands out blocks or batches: ``first`` (seconds from opening to
the first block) and ``lat`` (seconds per block or request, summarised
here as p50/p99).
"""

import json
import os
import resource
import sys
import time

clock = time.perf_counter


def _result(rows, row_bytes, seconds, first=None, lat=None, **extra):
    out = dict(rows=int(rows), bytes=int(rows) * int(row_bytes), seconds=seconds, first=first)
    if lat:
        lat = sorted(lat)
        out["p50"] = lat[len(lat) // 2]
        out["p99"] = lat[min(len(lat) - 1, (len(lat) * 99) // 100)]
        out["n_lat"] = len(lat)
    out.update(extra)
    return out


# ---------------------------------------------------------------- sequential


def seq_multiload(spec):
    import multiload

    B, n_procs = spec["block"], spec.get("n_procs", 2)
    lat, rows = [], 0
    t0 = clock()
    stream = multiload.Streamer(spec["file"])
    kw = dict(direct=True) if spec.get("direct") else {}
    q = stream.get_queue(spec["path"], n_procs=n_procs, block_size=B, remainder=True,
                         read_ahead=spec.get("read_ahead"), **kw)
    row_bytes = q.dtype.itemsize * (int(_prod(q.shape[1:])) if q.shape[1:] else 1)
    first = None
    t = clock()
    while True:
        guard = q.get()
        if guard is multiload.QueueClosed:
            break
        with guard as block:
            rows += block.shape[0]
        t1 = clock()
        lat.append(t1 - t)
        t = t1
        if first is None:
            first = t1 - t0
    secs = clock() - t0
    q.close()
    return _result(rows, row_bytes, secs, first, lat, io_mode=multiload.io_mode())


def seq_multitables(spec):
    import multitables

    B, n_procs = spec["block"], spec.get("n_procs", 2)
    lat, rows = [], 0
    t0 = clock()
    stream = multitables.Streamer(filename=spec["file"])
    q = stream.get_queue(path=spec["path"], n_procs=n_procs, block_size=B, remainder=True)
    first, row_bytes = None, 0
    t = clock()
    while True:
        guard = q.get()
        if guard is multitables.QueueClosed:
            break
        with guard as block:
            rows += block.shape[0]
            row_bytes = block.dtype.itemsize * (int(_prod(block.shape[1:])) if block.ndim > 1 else 1)
        t1 = clock()
        lat.append(t1 - t)
        t = t1
        if first is None:
            first = t1 - t0
    secs = clock() - t0
    q.close()
    _reap_children()
    return _result(rows, row_bytes, secs, first, lat)


def seq_h5py(spec):
    import h5py
    import numpy as np

    B = spec["block"]
    kw = {}
    if spec.get("rdcc"):
        kw = dict(rdcc_nbytes=spec["rdcc"], rdcc_nslots=1021)
    lat, rows = [], 0
    t0 = clock()
    with h5py.File(spec["file"], "r", **kw) as f:
        d = f[spec["path"]]
        n = d.shape[0]
        row_bytes = d.dtype.itemsize * int(_prod(d.shape[1:]))
        direct = spec.get("direct")
        if direct:
            buf = np.empty((B,) + d.shape[1:], d.dtype)
        first = None
        t = clock()
        for i in range(0, n, B):
            m = min(B, n - i)
            if direct:
                d.read_direct(buf, np.s_[i:i + m], np.s_[0:m])
            else:
                d[i:i + m]
            rows += m
            t1 = clock()
            lat.append(t1 - t)
            t = t1
            if first is None:
                first = t1 - t0
    return _result(rows, row_bytes, clock() - t0, first, lat, h5py=h5py.__version__)


def seq_tables(spec):
    import tables

    B = spec["block"]
    lat, rows = [], 0
    t0 = clock()
    with tables.open_file(spec["file"], "r") as f:
        node = f.get_node(spec["path"])
        n = node.nrows
        row_bytes = node.dtype.itemsize * int(_prod(node.shape[1:]))
        first = None
        t = clock()
        for i in range(0, n, B):
            m = min(B, n - i)
            node.read(i, i + m)
            rows += m
            t1 = clock()
            lat.append(t1 - t)
            t = t1
            if first is None:
                first = t1 - t0
    return _result(rows, row_bytes, clock() - t0, first, lat)


def seq_memmap(spec):
    """Copy blocks out of a numpy.memmap at the dataset's file offset into
    one reused buffer: the ceiling for reading contiguous data without HDF5."""
    import numpy as np

    B = spec["block"]
    lat, rows = [], 0
    t0 = clock()
    mm = np.memmap(spec["file"], mode="r", dtype=spec["dtype"], offset=spec["offset"],
                   shape=tuple(spec["shape"]))
    buf = np.empty((B,) + mm.shape[1:], mm.dtype)
    row_bytes = mm.dtype.itemsize * int(_prod(mm.shape[1:]))
    n = mm.shape[0]
    first = None
    t = clock()
    for i in range(0, n, B):
        m = min(B, n - i)
        np.copyto(buf[:m], mm[i:i + m])
        rows += m
        t1 = clock()
        lat.append(t1 - t)
        t = t1
        if first is None:
            first = t1 - t0
    return _result(rows, row_bytes, clock() - t0, first, lat)


# ------------------------------------------------------------ random access


def _batches(spec):
    import numpy as np

    rng = np.random.default_rng(spec.get("seed", 0))
    n, k, count = spec["n_rows"], spec["batch"], spec["count"]
    out = []
    for _ in range(count):
        idx = rng.choice(n, size=k, replace=False) if k > 1 else rng.integers(0, n, size=1)
        if spec.get("sorted"):
            idx = np.sort(idx)
        out.append(idx)
    return out


def _time_batches(batches, read, t0):
    """Call read(idx) for every batch; returns (latencies, rows, time to first)."""
    lat, rows, first = [], 0, None
    for idx in batches:
        t = clock()
        read(idx)
        t1 = clock()
        lat.append(t1 - t)
        rows += len(idx)
        if first is None:
            first = t1 - t0
    return lat, rows, first


def _sorted_gather(node, idx, key=lambda order: order):
    """h5py and PyTables need increasing indices: sort, read, put back in order."""
    import numpy as np

    if len(idx) == 1:
        return node[int(idx[0])]
    order = np.argsort(idx)
    got = node[key(idx[order])]
    out = np.empty_like(got)
    out[order] = got
    return out


def rand_h5py(spec):
    import h5py

    batches = _batches(spec)
    kw = dict(rdcc_nbytes=spec["rdcc"], rdcc_nslots=1021) if spec.get("rdcc") else {}
    t0 = clock()
    with h5py.File(spec["file"], "r", **kw) as f:
        d = f[spec["path"]]
        row_bytes = d.dtype.itemsize * int(_prod(d.shape[1:]))
        lat, rows, first = _time_batches(batches, lambda idx: _sorted_gather(d, idx), t0)
    return _result(rows, row_bytes, clock() - t0, first, lat)


def rand_memmap(spec):
    import numpy as np

    batches = _batches(spec)
    t0 = clock()
    mm = np.memmap(spec["file"], mode="r", dtype=spec["dtype"], offset=spec["offset"],
                   shape=tuple(spec["shape"]))
    row_bytes = mm.dtype.itemsize * int(_prod(mm.shape[1:]))
    lat, rows, first = _time_batches(batches, lambda idx: mm[idx], t0)
    return _result(rows, row_bytes, clock() - t0, first, lat)


def rand_tables(spec):
    import tables

    batches = _batches(spec)
    t0 = clock()
    with tables.open_file(spec["file"], "r") as f:
        node = f.get_node(spec["path"])
        row_bytes = node.dtype.itemsize * int(_prod(node.shape[1:]))
        # PyTables needs the tuple for point selection in 2-D.
        lat, rows, first = _time_batches(
            batches, lambda idx: _sorted_gather(node, idx, key=lambda sel: (sel, slice(None))), t0)
    return _result(rows, row_bytes, clock() - t0, first, lat)


def _reader_requests(mod, spec, batches, key=lambda idx: idx):
    """Drive a multitables-style Reader: get_dataset, create_stage, request,
    then get() (a copy) for every batch, one request in flight."""
    t0 = clock()
    reader = mod.Reader(spec["file"], n_procs=spec.get("n_procs", 2))
    ds = reader.get_dataset(spec["path"])
    stage = ds.create_stage(max(len(b) for b in batches))
    row_bytes = ds.dtype.itemsize * int(_prod(ds.shape[1:]))
    lat, rows, first = _time_batches(
        batches,
        lambda idx: reader.request(ds[int(idx[0]) if len(idx) == 1 else key(idx)], stage).get(),
        t0)
    secs = clock() - t0
    reader.close()
    _reap_children()
    return _result(rows, row_bytes, secs, first, lat)


def rand_multiload(spec):
    import multiload

    if not hasattr(multiload, "Reader"):
        return dict(missing="multiload.Reader does not exist yet")
    return _reader_requests(multiload, spec, _batches(spec))


def rand_multitables(spec):
    import multitables

    # multitables reads with PyTables, which needs (rows, slice) for 2-D point selection;
    # a list, since numpy index arrays intermittently break its msgpack messages.
    return _reader_requests(multitables, spec, _batches(spec), key=lambda idx: ([int(i) for i in idx], slice(None)))


# ------------------------------------------------------------ training loop


def _work(torch, W):
    """The fixed per-batch work of the training loop: one small matmul."""
    def step(x):
        return (x @ W).sum()
    return step


def train_loop(spec):
    """Consume spec['batches'] batches of 256 rows with a fixed small amount
    of work each; measure samples/s and the fraction of time spent waiting
    for data."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    n_batches, B, feed = spec["batches"], spec["batch"], spec["feed"]
    n_batches = min(n_batches, spec["n_rows"] // B)  # the DataLoader makes one pass
    W = torch.randn(spec["cols"], 64)
    step = _work(torch, W)
    wait = 0.0
    lat, rows = [], 0
    first = None
    t0 = clock()
    if feed == "multiload":
        import multiload

        q = multiload.Streamer(spec["file"]).get_queue(spec["path"], n_procs=2, block_size=B, cyclic=True)
        for _ in range(n_batches):
            t = clock()
            guard = q.get()
            with guard as block:
                x = torch.from_numpy(block)
                t1 = clock()
                step(x)
            wait += t1 - t
            lat.append(t1 - t)
            rows += x.shape[0]
            if first is None:
                first = t1 - t0
        q.close()
    elif feed == "dataloader":
        from torch.utils.data import DataLoader

        loader = DataLoader(H5Rows(spec["file"], spec["path"]), batch_size=B, shuffle=False,
                            num_workers=spec["workers"], drop_last=True)
        it = iter(loader)
        for _ in range(n_batches):
            t = clock()
            x = next(it)
            t1 = clock()
            step(x)
            wait += t1 - t
            lat.append(t1 - t)
            rows += x.shape[0]
            if first is None:
                first = t1 - t0
        del it, loader
        _reap_children()
    elif feed == "multitables":
        import multitables

        gen = multitables.Streamer(filename=spec["file"]).get_generator(
            path=spec["path"], n_procs=2, block_size=B, cyclic=True)
        buf = np.empty((B, spec["cols"]), np.float32)
        for _ in range(n_batches):
            t = clock()
            for j in range(B):
                buf[j] = next(gen)
            x = torch.from_numpy(buf)
            t1 = clock()
            step(x)
            wait += t1 - t
            lat.append(t1 - t)
            rows += B
            if first is None:
                first = t1 - t0
        gen.close()
        _reap_children()
    else:
        raise ValueError(feed)
    secs = clock() - t0
    return _result(rows, spec["cols"] * 4, secs, first, lat, wait_fraction=wait / secs)


def shuffled_epoch(spec):
    """W8: one shuffled epoch of images + labels in batches of spec['batch'],
    each batch made into torch tensors and given a tiny model step (a 64x16
    matmul on every image's 8x8 subsample): rows/s, the loop's wait fraction
    (time blocked in next() / total) and, for BatchStream, the growth of
    peak RSS beside its stats()['memory_bound']."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    B, feed, n = spec["batch"], spec["feed"], spec["n_rows"]
    W = torch.randn((IMAGE_SIDE // 8) ** 2, 16)
    work = _work(torch, W)

    def step(x, y):
        return work(x[:, ::8, ::8].reshape(len(x), -1).float()) + y.sum()

    rss0 = _vm_mib("VmRSS")
    extra = {}
    t0 = clock()
    if feed == "batchstream":
        import multiload

        stream = multiload.BatchStream(spec["file"], {"image": "/images", "label": "/labels"}, B,
                                       shuffle=spec["shuffle"], seed=0, block_rows=spec.get("block_rows"),
                                       read_ahead=spec.get("read_ahead"))
        batches = ((torch.from_numpy(b["image"]), torch.from_numpy(b["label"])) for b in stream)
        lat, rows, wait, first = _consume(batches, step, t0)
        st = stream.stats()
        extra = dict(memory_bound_mib=st["memory_bound"] / MIB_F, stream_wait_s=st["wait_s"],
                     blocks_read=st["blocks_read"], block_rows_read=st["block_rows_read"],
                     gathered_rows=st["gathered_rows"], block_rows=stream.block_rows,
                     window_rows=stream.order.window_rows, num_streams=stream.num_streams)
        stream.close()
        row_bytes = IMAGE_SIDE * IMAGE_SIDE + 8
    elif feed == "streamer":
        import multiload

        q = multiload.Streamer(spec["file"]).get_queue("/images", n_procs=2, block_size=B)

        def blocks():
            while True:
                guard = q.get()
                if guard is multiload.QueueClosed:
                    return
                with guard as block:
                    yield torch.from_numpy(block), torch.zeros(1, dtype=torch.int64)

        lat, rows, wait, first = _consume(blocks(), step, t0)
        q.close()
        row_bytes = IMAGE_SIDE * IMAGE_SIDE  # images only: the labels are not read
    elif feed == "dataloader":
        from torch.utils.data import DataLoader

        loader = DataLoader(H5Rows(spec["file"], ["/images", "/labels"]), batch_size=B, shuffle=True,
                            num_workers=spec["workers"], drop_last=True,
                            generator=torch.Generator().manual_seed(0))
        lat, rows, wait, first = _consume(iter(loader), step, t0)
        del loader
        _reap_children()
        row_bytes = IMAGE_SIDE * IMAGE_SIDE + 8
    elif feed == "memmap":
        mi = np.memmap(spec["file"], mode="r", dtype=np.uint8, offset=spec["offset"], shape=(n, IMAGE_SIDE, IMAGE_SIDE))
        ml = np.memmap(spec["file"], mode="r", dtype="<i8", offset=spec["label_offset"], shape=(n,))
        perm = np.random.default_rng(0).permutation(n)
        batches = ((torch.from_numpy(mi[perm[i:i + B]]), torch.from_numpy(ml[perm[i:i + B]]))
                   for i in range(0, n // B * B, B))
        lat, rows, wait, first = _consume(batches, step, t0)
        row_bytes = IMAGE_SIDE * IMAGE_SIDE + 8
    else:
        raise ValueError(feed)
    secs = clock() - t0
    hwm = _vm_hwm_mib()
    if rss0 is not None and hwm is not None:
        extra["rss_growth_mib"] = hwm - rss0
    return _result(rows, row_bytes, secs, first, lat, wait_fraction=wait / secs, **extra)


def _consume(batches, step, t0):
    """Run the loop over an iterator of (images, labels) batches; returns
    (latencies of next(), rows, seconds blocked in next(), time to first)."""
    lat, rows, wait, first = [], 0, 0.0, None
    it = iter(batches)
    while True:
        t = clock()
        try:
            x, y = next(it)
        except StopIteration:
            break
        t1 = clock()
        step(x, y)
        wait += t1 - t
        lat.append(t1 - t)
        rows += x.shape[0]
        if first is None:
            first = t1 - t0
    return lat, rows, wait, first


IMAGE_SIDE = 64  # W8 image side (benchmarks/files.py IMAGE)
MIB_F = float(1 << 20)


class H5Rows:
    """A torch map-style Dataset of an h5py dataset's rows (a list of paths:
    a tuple of the datasets' rows, for images and labels); the file is
    opened lazily in each worker, as torch's users are told to."""

    def __init__(self, filename, path):
        import h5py

        self.filename, self.path, self.d = filename, path, None
        self.paths = [path] if isinstance(path, str) else list(path)
        with h5py.File(filename, "r") as f:
            self.n = f[self.paths[0]].shape[0]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import h5py
        import torch

        if self.d is None:  # first use in this worker: open the file, keep the datasets
            f = h5py.File(self.filename, "r")
            self.d = [f[p] for p in self.paths]
        rows = tuple(torch.as_tensor(d[i]) for d in self.d)
        return rows[0] if isinstance(self.path, str) else rows


# -------------------------------------------------------------------- misc


def _prod(shape):
    p = 1
    for s in shape:
        p *= int(s)
    return p


def _reap_children():
    """Join the worker processes a peer started (so their CPU time counts
    in RUSAGE_CHILDREN); stop any that do not finish within a second."""
    import multiprocessing

    for p in multiprocessing.active_children():
        p.join(1.0)
        if p.is_alive():
            p.terminate()
            p.join(1.0)


def _vm_hwm_mib():
    """Peak RSS of this process alone. (ru_maxrss is no good here: Linux
    carries the forking parent's peak over into the child across exec.)"""
    return _vm_mib("VmHWM")


def _vm_mib(field):
    """A field of /proc/self/status (VmHWM, VmRSS) in MiB, or None."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ------------------------------------------------------------ opening (W10)


def open_multiload(spec):
    """Open the dataset and fill its chunk table, as the first read of a
    Streamer or Reader does (the index walked in one pass and checked
    against HDF5; _chunk_table_state does just that); rows = chunks."""
    import multiload._core as core

    t0 = clock()
    state, why = core._chunk_table_state(spec["file"], spec["path"])
    secs = clock() - t0
    if state != "walked":
        return dict(error=f"the chunk table was not walked natively: {state} ({why})")
    return _result(spec["chunks"], 0, secs)


def open_h5py(spec):
    """h5py's open and one pass over every chunk's address (chunk_iter,
    HDF5's own index walk), what a reader that plans its reads needs."""
    import h5py

    t0 = clock()
    with h5py.File(spec["file"], "r") as f:
        d = f[spec["path"]]
        n = [0]

        def count(_info):
            n[0] += 1
        d.id.chunk_iter(count)
    secs = clock() - t0
    assert n[0] == spec["chunks"], (n[0], spec["chunks"])
    return _result(spec["chunks"], 0, secs)


FUNCS = {
    "seq-multiload": seq_multiload, "seq-multitables": seq_multitables, "seq-h5py": seq_h5py,
    "seq-tables": seq_tables, "seq-memmap": seq_memmap,
    "rand-multiload": rand_multiload, "rand-multitables": rand_multitables, "rand-h5py": rand_h5py,
    "rand-tables": rand_tables, "rand-memmap": rand_memmap,
    "train": train_loop, "shuffled-epoch": shuffled_epoch,
    "open-multiload": open_multiload, "open-h5py": open_h5py,
}


def main():
    spec = json.loads(sys.argv[1])
    for name in spec.get("imports", ()):  # import before the clock: CPU time is the run's alone
        try:
            __import__(name)
        except ImportError:
            pass
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = FUNCS[spec["func"]](spec)
    except Exception as e:  # reported, never hidden: the run says what failed
        out = dict(error=f"{type(e).__name__}: {e}")
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu"] = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
                  + c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime)
    out["rss_mib"] = _vm_hwm_mib() or r1.ru_maxrss / 1024
    out["rss_children_mib"] = c1.ru_maxrss / 1024
    sys.stdout.write("\n@@RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # do not wait for stray worker processes' atexit handlers


if __name__ == "__main__":
    main()
