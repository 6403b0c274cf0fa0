"""The benchmark files, written once into the cache folder.

All float data is the same smooth 2-D random walk quantised to 1/256
(the idea of benchmarks/demo.py): neighbouring values and rows are close,
so deflate+shuffle compresses it the way it compresses real measurements,
not like zeros or noise. W1, W2 and W3 hold the same rows (W3 the first
part of them), so only the layout differs between them.

Every file is written under a temporary name and renamed when complete, so
an interrupted run never leaves a file that looks cached. Names carry the
size and a version: bump VERSION when the content changes.
"""

import os
import sys
import time

import numpy as np

VERSION = 1
ROW = 256            # float32 values per row: 1 KiB rows (W1-W3, W5, W7)
WIDE_ROW = 1024      # 4 KiB rows (W6)
CHUNK_ROWS = 256     # 256 KiB chunks (W2, W3)
PIECE = 8192         # rows generated and written per step
TABLE_FLOATS = 16    # W4 row: 16 float32 + int64 label = 72 bytes
IMAGE = 64           # W8: 64x64 uint8 images, one per gzip chunk, int64 labels


def walk_rows(rng, level, n, width):
    """n rows of the random walk continuing from `level`; returns (rows, level)."""
    offsets = level + np.cumsum(rng.normal(0.0, 0.05, n))
    steps = rng.normal(0.0, 0.02, (n, width))
    rows = np.cumsum(steps, axis=1) + offsets[:, None]
    return (np.round(rows * 256) / 256).astype(np.float32), float(offsets[-1])


def progress(label, done, total):
    pct = 100 * done // total
    end = "\n" if done >= total else ""
    if sys.stdout.isatty():
        print(f"\r   {label}: {pct:3d}%", end=end, flush=True)
    elif done >= total:
        print(f"   {label}: done", flush=True)


def _write_array(path, n_rows, width, label, **opts):
    import h5py

    tmp = path + ".part"
    rng, level = np.random.default_rng(1), 0.0
    with h5py.File(tmp, "w") as f:
        d = f.create_dataset("data", shape=(n_rows, width), dtype=np.float32, **opts)
        for i in range(0, n_rows, PIECE):
            n = min(PIECE, n_rows - i)
            d[i:i + n], level = walk_rows(rng, level, n, width)
            progress(label, i + n, n_rows)
    os.replace(tmp, path)


def _write_table(path, n_rows, label):
    import tables

    tmp = path + ".part"
    dtype = np.dtype([("x", np.float32, (TABLE_FLOATS,)), ("label", np.int64)])
    rng, level = np.random.default_rng(2), 0.0
    with tables.open_file(tmp, "w") as f:
        t = f.create_table("/", "table", description=dtype, expectedrows=n_rows)
        for i in range(0, n_rows, PIECE * 4):
            n = min(PIECE * 4, n_rows - i)
            rows = np.empty(n, dtype)
            rows["x"], level = walk_rows(rng, level, n, TABLE_FLOATS)
            rows["label"] = rng.integers(0, 1000, n)
            t.append(rows)
            progress(label, i + n, n_rows)
    os.replace(tmp, path)


def images(rng, n):
    """n 64x64 uint8 images that deflate like photographs more than like
    noise or zeros: an 8x8 random field blown up to 64x64 (blocks of
    smooth colour) plus +-1 of pixel noise: gzip level 4 makes them ~1.65x
    smaller, about what it does to decoded photographs."""
    coarse = rng.integers(0, 256, (n, IMAGE // 8, IMAGE // 8)).astype(np.int16)
    big = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    noise = rng.integers(-1, 2, (n, IMAGE, IMAGE), dtype=np.int16)
    return np.clip(big + noise, 0, 255).astype(np.uint8)


def _write_images(path, n_rows, label, chunked):
    """/images (n, 64, 64) uint8 and /labels (n,) int64 (contiguous). With
    `chunked`, each image is one gzip (level 4) chunk; otherwise /images is
    contiguous too (the copy numpy.memmap can read)."""
    import h5py

    tmp = path + ".part"
    rng = np.random.default_rng(8)  # the same images in both files
    opts = dict(chunks=(1, IMAGE, IMAGE), compression="gzip", compression_opts=4) if chunked else {}
    with h5py.File(tmp, "w") as f:
        d = f.create_dataset("images", shape=(n_rows, IMAGE, IMAGE), dtype=np.uint8, **opts)
        lab = f.create_dataset("labels", shape=(n_rows,), dtype=np.int64)
        for i in range(0, n_rows, PIECE):
            n = min(PIECE, n_rows - i)
            d[i:i + n] = images(rng, n)
            lab[i:i + n] = rng.integers(0, 1000, n)
            progress(label, i + n, n_rows)
    os.replace(tmp, path)


W10_ROWS, W10_COLS, W10_CHUNK = 200_000, 64, 8   # 25,000 chunks of 8 rows (2 KiB each)
W10_INDEXES = (("farray", None), ("earray", (None, W10_COLS)), ("btree2", (None, None)))
W10_OPEN_CHUNKS = (10**3, 10**4, 10**5, 10**6)


def _write_latest(path):
    """W10: one array three times under libver='latest', each with another
    chunk index -- fixed array, extensible array (one unlimited dimension),
    v2 B-tree (two)."""
    import h5py

    data = np.random.default_rng(0).random((W10_ROWS, W10_COLS), dtype=np.float32)
    tmp = path + ".part"
    with h5py.File(tmp, "w", libver="latest") as f:
        for name, maxshape in W10_INDEXES:
            f.create_dataset(name, data=data, chunks=(W10_CHUNK, W10_COLS), maxshape=maxshape)
    os.replace(tmp, path)


def _write_open_curve(path, n):
    """W10 open cost: n one-row chunks of 4 float32, an extensible-array index."""
    import h5py

    tmp = path + ".part"
    with h5py.File(tmp, "w", libver="latest") as f:
        f.create_dataset("d", data=np.arange(n * 4, dtype=np.float32).reshape(n, 4), chunks=(1, 4),
                         maxshape=(None, 4))
    os.replace(tmp, path)


def sizes(full):
    """Rows of each file: quick keeps `make bench` near 5 minutes on 2 cores (W8 about 1.5 of them:
    seven systems that each import torch, five runs each)."""
    mib = 1 << 20
    if full:
        return dict(w1=2048 * mib // 1024, w3=1024 * mib // 1024, w4=8 * 1024 * 1024, w6=8192 * 4,
                    w8=256 * 1024)
    return dict(w1=512 * mib // 1024, w3=128 * mib // 1024, w4=2 * 1024 * 1024, w6=4096, w8=32 * 1024)


def ensure(cache, full, scale=1.0):
    """Write missing files; return {name: path}."""
    os.makedirs(cache, exist_ok=True)
    n = {k: max(CHUNK_ROWS * 4, int(v * scale)) for k, v in sizes(full).items()}
    tag = f"v{VERSION}"
    paths = dict(
        w1=os.path.join(cache, f"bench-{tag}-contiguous-{n['w1']}.h5"),
        w2=os.path.join(cache, f"bench-{tag}-chunked-{n['w1']}.h5"),
        w3=os.path.join(cache, f"bench-{tag}-deflate-{n['w3']}.h5"),
        w4=os.path.join(cache, f"bench-{tag}-table-{n['w4']}.h5"),
        w6=os.path.join(cache, f"bench-{tag}-rows4k-{n['w6']}.h5"),
        w8=os.path.join(cache, f"bench-{tag}-images-gzip-{n['w8']}.h5"),
        w8c=os.path.join(cache, f"bench-{tag}-images-contiguous-{n['w8']}.h5"),
        w10=os.path.join(cache, f"bench-{tag}-latest-{W10_ROWS}.h5"),
    )
    for c in W10_OPEN_CHUNKS:
        paths[f"w10open{c}"] = os.path.join(cache, f"bench-{tag}-latest-open-{c}.h5")
    jobs = [
        ("w1", lambda p: _write_array(p, n["w1"], ROW, f"W1 contiguous {n['w1'] >> 10} MiB")),
        ("w2", lambda p: _write_array(p, n["w1"], ROW, f"W2 chunked {n['w1'] >> 10} MiB",
                                      chunks=(CHUNK_ROWS, ROW))),
        ("w3", lambda p: _write_array(p, n["w3"], ROW, f"W3 deflate+shuffle {n['w3'] >> 10} MiB raw",
                                      chunks=(CHUNK_ROWS, ROW), shuffle=True, compression="gzip",
                                      compression_opts=4)),
        ("w4", lambda p: _write_table(p, n["w4"], f"W4 table {n['w4'] * 72 >> 20} MiB")),
        ("w6", lambda p: _write_array(p, n["w6"], WIDE_ROW, f"W6 4 KiB rows {n['w6'] * 4 >> 10} MiB")),
        ("w8", lambda p: _write_images(p, n["w8"], f"W8 images, gzip chunk per image, {n['w8'] * 4 >> 10} MiB raw",
                                       chunked=True)),
        ("w8c", lambda p: _write_images(p, n["w8"], f"W8 images, contiguous, {n['w8'] * 4 >> 10} MiB",
                                        chunked=False)),
        ("w10", _write_latest),
    ] + [(f"w10open{c}", lambda p, c=c: _write_open_curve(p, c)) for c in W10_OPEN_CHUNKS]
    for key, write in jobs:
        if not os.path.exists(paths[key]):
            t0 = time.perf_counter()
            write(paths[key])
            print(f"   wrote {paths[key]} ({os.path.getsize(paths[key]) / 2**20:.0f} MiB, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
    return paths


def chunk_list(path, dataset="data"):
    """Write "offset size" of every stored chunk next to the file (once);
    return (list path, decoded chunk bytes)."""
    import h5py

    out = path + ".chunks"
    with h5py.File(path, "r") as f:
        d = f[dataset]
        chunk_bytes = int(np.prod(d.chunks)) * d.dtype.itemsize
        if not os.path.exists(out):
            with open(out + ".part", "w") as o:
                for i in range(d.id.get_num_chunks()):
                    info = d.id.get_chunk_info(i)
                    o.write(f"{info.byte_offset} {info.size}\n")
            os.replace(out + ".part", out)
    return out, chunk_bytes
