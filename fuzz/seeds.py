"""seeds.py - the seed files of the end-to-end fuzz campaign (fuzz/run.py).

Small HDF5 files (a few KB to ~100 KB), written by h5py and PyTables, that
between them hold every storage layout, chunk index, filter and datatype
the core parses: a mutation can only reach a parser through a file that
uses it. Each seed is one concern (one index kind, one filter family, one
type family) so a finding's seed already says where to look, and so one
case reads few datasets (the campaign's speed is cases per second).

Deterministic: fixed data (numpy's seeded generator), no timestamps (h5py
writes none by default; PyTables' files are written with fixed titles),
so the same tree gives byte-identical seeds and a finding's byte patch
against its seed means the same thing on every machine.

Writes DIR/<name>.h5 for each seed, the auxiliary files some need beside
them (the target of an external link, an external raw-data file), and
DIR/manifest.json: {name: {"file", "datasets": [paths], "aux": [files]}}.
Run: python fuzz/seeds.py DIR
"""

import ctypes
import json
import os
import sys
import warnings

import h5py
import numpy as np
import tables

SEEDS = {}


def seed(name, datasets, aux=()):
    """Register a writer of seed `name` holding `datasets` (the paths the
    campaign reads; H5Ovisit finds them too, but not through links)."""
    def register(fn):
        SEEDS[name] = (fn, list(datasets), list(aux))
        return fn
    return register


def rng(name):
    # one generator per seed, seeded by its name: adding a seed changes no other
    return np.random.default_rng(sum(name.encode()) * 7919)


def values(name, shape, dtype):
    """Smooth, compressible but non-constant data (filters then do work)."""
    r = rng(name)
    n = int(np.prod(shape))
    base = np.cumsum(r.integers(-3, 4, n)).reshape(shape)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (base * 0.25).astype(dt)
    if dt.kind == "b":
        return (base % 2 == 0)
    info = np.iinfo(dt)
    return np.clip(base, info.min, info.max).astype(dt)


def dataset_dcpl():
    """A dataset creation list for h5py's low-level API, without the
    modification times HDF5 records by default (they break determinism)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    return dcpl


def h5file(fn, libver=None, **kw):
    return h5py.File(fn, "w", libver=libver, track_order=False, **kw)


def h5lib():
    """h5py's bundled HDF5 (the library its handles belong to)."""
    libs = os.path.join(os.path.dirname(os.path.dirname(h5py.__file__)), "h5py.libs")
    for name in sorted(os.listdir(libs)) if os.path.isdir(libs) else []:
        if name.startswith("libhdf5-"):
            return ctypes.CDLL(os.path.join(libs, name))
    return ctypes.CDLL(h5py.h5.__file__)  # a system-linked h5py: the symbols are global


def lowlevel_file(fn, istore_k=None, sym_k=None, libver=None):
    """An h5py File with small B-tree fan-outs: many levels from few chunks."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)  # the root group's times (v2 object headers)
    if istore_k:
        # h5py does not wrap H5Pset_istore_k: call it in h5py's own HDF5 on the same property list
        if h5lib().H5Pset_istore_k(ctypes.c_int64(fcpl.id), ctypes.c_uint(istore_k)) < 0:
            raise RuntimeError("H5Pset_istore_k failed")
    if sym_k:
        if h5lib().H5Pset_sym_k(ctypes.c_int64(fcpl.id), ctypes.c_uint(sym_k[0]), ctypes.c_uint(sym_k[1])) < 0:
            raise RuntimeError("H5Pset_sym_k failed")
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    # as h5py.File does for libver=None: HDF5 2.0's own default lower bound is newer
    fapl.set_libver_bounds(*(libver or (h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_V110)))
    fid = h5py.h5f.create(fn.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)
    return h5py.File(fid)


LATEST = (h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)  # the 1.10 format: what the linked HDF5 reads
LATEST_HL = ("v110", "v110")


# ------------------------------------------------------------ contiguous, compact

@seed("contig", ["/i32", "/f64_3d", "/empty_fill"])
def _contig(fn):
    with h5file(fn) as f:
        f["i32"] = values("contig", (300, 7), "<i4")
        f["f64_3d"] = values("contig3", (20, 5, 6), "<f8")
        f.create_dataset("empty_fill", (50, 4), "<i2", fillvalue=-7)  # never written: fill


def _compact(f, name, data):
    dcpl = dataset_dcpl()
    dcpl.set_layout(h5py.h5d.COMPACT)
    tid = h5py.h5t.py_create(data.dtype)
    space = h5py.h5s.create_simple(data.shape)
    dsid = h5py.h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl)
    dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))


@seed("compact", ["/c1", "/c2", "/c_u8"])
def _compact_seed(fn):
    with h5file(fn) as f:
        _compact(f, "c1", values("compact", (100,), "<i4"))
        _compact(f, "c2", values("compact2", (30, 5), ">f4"))
        _compact(f, "c_u8", values("compact3", (64, 3), "u1"))


@seed("userblock", ["/contig", "/chunked"])
def _userblock(fn):
    with h5file(fn, userblock_size=1024) as f:
        f["contig"] = values("ub", (200, 3), "<u4")
        f.create_dataset("chunked", data=values("ub2", (200, 3), "<i8"), chunks=(16, 3))
    with open(fn, "r+b") as fh:
        fh.write(b"multiload fuzz seed: user block\n")


# ------------------------------------------------------------ chunked, v1 B-tree

@seed("btree1_1d", ["/a", "/sparse"])
def _btree1_1d(fn):
    # 1000 rows in chunks of 10: 100 chunks > 64, two B-tree levels; 1003 rows: a partial edge chunk
    with h5file(fn) as f:
        f.create_dataset("a", data=values("b1", (1003,), "<i4"), chunks=(10,))
        d = f.create_dataset("sparse", (400,), "<f4", chunks=(8,), fillvalue=2.5)
        d[40:90] = values("b1s", (50,), "<f4")  # most chunks never written: fill value
        d[333] = 1.0


@seed("btree1_2d", ["/a"])
def _btree1_2d(fn):
    with h5file(fn) as f:  # 13 x 5 = 65 chunks, partial in both dims
        f.create_dataset("a", data=values("b2", (100, 33), "<i2"), chunks=(8, 7))


@seed("btree1_3d", ["/a"])
def _btree1_3d(fn):
    with h5file(fn) as f:  # 14 x 3 x 2 = 84 chunks
        f.create_dataset("a", data=values("b3", (40, 9, 10), "<u2"), chunks=(3, 4, 5))


@seed("btree1_deep", ["/a", "/g/b"])
def _btree1_deep(fn):
    # istore_k=2: four entries a node, so 150 chunks make a four-level tree;
    # sym_k=(2, 2): the group's symbol table splits into several SNODs
    with lowlevel_file(fn, istore_k=2, sym_k=(2, 2)) as f:
        f.create_dataset("a", data=values("bd", (600,), "<i4"), chunks=(4,))
        gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
        gcpl.set_obj_track_times(False)  # h5py's create_group records a modification time
        g = h5py.Group(h5py.h5g.create(f.id, b"g", gcpl=gcpl))
        for i in range(9):
            g.create_dataset("pad%d" % i, data=np.arange(i + 1, dtype="u1"))
        g.create_dataset("b", data=values("bd2", (60, 6), "<f8"), chunks=(5, 4))


# ------------------------------------------------------------ chunked, 1.10 indexes

@seed("farray", ["/a", "/gz"])
def _farray(fn):
    with h5file(fn, libver=LATEST_HL) as f:  # fixed dims, several chunks: fixed array
        f.create_dataset("a", data=values("fa", (500, 4), "<i4"), chunks=(8, 4))
        f.create_dataset("gz", data=values("fa2", (300,), "<f4"), chunks=(16,), compression="gzip")


@seed("earray", ["/a", "/gz"])
def _earray(fn):
    with h5file(fn, libver=LATEST_HL) as f:  # one unlimited dim: extensible array
        f.create_dataset("a", data=values("ea", (900,), "<i4"), chunks=(4,), maxshape=(None,))
        f.create_dataset("gz", data=values("ea2", (400, 3), "<i2"), chunks=(10, 3), maxshape=(None, 3),
                         compression="gzip", shuffle=True)


@seed("btree2", ["/a", "/gz"])
def _btree2(fn):
    with h5file(fn, libver=LATEST_HL) as f:  # two unlimited dims: v2 B-tree
        f.create_dataset("a", data=values("bt", (120, 40), "<i2"), chunks=(6, 5), maxshape=(None, None))
        f.create_dataset("gz", data=values("bt2", (90, 20), "<f4"), chunks=(10, 4), maxshape=(None, None),
                         compression="gzip")


@seed("single_implicit", ["/single", "/single_gz", "/implicit"])
def _single_implicit(fn):
    with lowlevel_file(fn, libver=LATEST) as f:
        f.create_dataset("single", data=values("si", (100, 6), "<i4"), chunks=(100, 6))
        f.create_dataset("single_gz", data=values("si2", (80, 5), "<f8"), chunks=(80, 5), compression="gzip")
        # early allocation, no filter, fixed dims: the implicit index
        dcpl = dataset_dcpl()
        dcpl.set_chunk((10, 4))
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        data = values("si3", (95, 8), "<i4")
        dsid = h5py.h5d.create(f.id, b"implicit", h5py.h5t.STD_I32LE, h5py.h5s.create_simple(data.shape),
                               dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)


@seed("sb_v2", ["/a", "/contig"])
def _sb_v2(fn):
    # the 1.8 format: superblock v2 and v2 object headers, but still v1 B-tree chunk indexes
    with h5file(fn, libver=("v108", "v110")) as f:
        f.create_dataset("a", data=values("s2", (500, 2), "<i4"), chunks=(6, 2), maxshape=(None, 2))
        f["contig"] = values("s2c", (64, 4), "<f4")


# ------------------------------------------------------------ filters

@seed("filters", ["/gz", "/shuf_gz", "/fletcher", "/gz_fletcher", "/lzf"])
def _filters(fn):
    with h5file(fn) as f:
        f.create_dataset("gz", data=values("fg", (600, 4), "<f4"), chunks=(50, 4), compression="gzip",
                         compression_opts=4)
        f.create_dataset("shuf_gz", data=values("fs", (500, 3), "<i8"), chunks=(40, 3), compression="gzip",
                         shuffle=True)
        f.create_dataset("fletcher", data=values("ff", (400, 2), "<i4"), chunks=(30, 2), fletcher32=True)
        f.create_dataset("gz_fletcher", data=values("fgf", (300,), ">i2"), chunks=(32,), compression="gzip",
                         fletcher32=True)
        f.create_dataset("lzf", data=values("fl", (500, 2), "<u4"), chunks=(25, 2), compression="lzf")


@seed("filter_slow", ["/scaleoffset", "/nbit"])
def _filter_slow(fn):
    # filters the core does not decode itself: the slow path (H5Dread under the lock)
    with h5file(fn) as f:
        f.create_dataset("scaleoffset", data=values("so", (300,), "<i4"), chunks=(30,), scaleoffset=0)
        dt = h5py.h5t.STD_I32LE.copy()
        dt.set_precision(20)
        dcpl = dataset_dcpl()
        dcpl.set_chunk((25,))
        dcpl.set_filter(5, 0)  # H5Z_FILTER_NBIT
        data = values("nb", (200,), "<i4") % 1000
        dsid = h5py.h5d.create(f.id, b"nbit", dt, h5py.h5s.create_simple(data.shape), dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)


@seed("pytables_blosc", ["/carray", "/earray"])
def _pytables_blosc(fn):
    filt = tables.Filters(complevel=5, complib="blosc", shuffle=True)
    with tables.open_file(fn, "w", title="seed") as f:
        f.create_carray("/", "carray", obj=values("pb", (400, 5), "<f4"), filters=filt, chunkshape=(32, 5), track_times=False)
        ea = f.create_earray("/", "earray", tables.Int16Atom(), (0, 3), filters=filt, chunkshape=(50, 3), track_times=False)
        ea.append(values("pb2", (333, 3), "<i2"))


# ------------------------------------------------------------ types

@seed("types_int", ["/i1", "/i2be", "/i4", "/i8be", "/u1", "/u2", "/u4be", "/u8"])
def _types_int(fn):
    with h5file(fn) as f:
        for name, dt in [("i1", "i1"), ("i2be", ">i2"), ("i4", "<i4"), ("i8be", ">i8"),
                         ("u1", "u1"), ("u2", "<u2"), ("u4be", ">u4"), ("u8", "<u8")]:
            f.create_dataset(name, data=values("ti" + name, (64, 3), dt), chunks=(16, 3))


@seed("types_other", ["/f2", "/f4be", "/f8", "/str", "/bool", "/arr", "/compound"])
def _types_other(fn):
    with h5file(fn) as f:
        f["f2"] = values("tf2", (100,), "<f2")
        f.create_dataset("f4be", data=values("tf4", (100, 2), ">f4"), chunks=(20, 2))
        f["f8"] = values("tf8", (50, 3), "<f8")
        f["str"] = np.array([b"s%03d" % i for i in range(80)], dtype="S6")
        f.create_dataset("bool", data=values("tb", (120,), "?"), chunks=(32,))
        arr = np.dtype(("<i4", (2, 3)))
        d = f.create_dataset("arr", (40,), arr, chunks=(8,))
        d[:] = values("ta", (40, 2, 3), "<i4")
        cdt = np.dtype([("a", "<i4"), ("b", ">f8"), ("c", "S3"), ("d", "<u2", (2,))])
        rec = np.zeros(70, cdt)
        rec["a"] = np.arange(70)
        rec["b"] = values("tcb", (70,), "<f8")
        rec["c"] = [b"x%d" % (i % 10) for i in range(70)]
        rec["d"] = values("tcd", (70, 2), "<u2")
        f.create_dataset("compound", data=rec, chunks=(16,))


class Row(tables.IsDescription):
    idx = tables.Int32Col(pos=0)
    val = tables.Float64Col(pos=1)
    name = tables.StringCol(6, pos=2)
    flag = tables.BoolCol(pos=3)
    vec = tables.Int16Col(shape=(3,), pos=4)


@seed("pytables_table", ["/table", "/table_zlib"])
def _pytables_table(fn):
    with tables.open_file(fn, "w", title="seed") as f:
        for name, filt in [("table", None), ("table_zlib", tables.Filters(complevel=3, complib="zlib"))]:
            t = f.create_table("/", name, Row, filters=filt, chunkshape=(40,), expectedrows=300, track_times=False)
            r = t.row
            v = values("pt" + name, (300,), "<f8")
            for i in range(300):
                r["idx"], r["val"], r["name"] = i, v[i], b"n%d" % i
                r["flag"], r["vec"] = i % 3 == 0, (i, -i, i % 7)
                r.append()
            t.flush()


@seed("pytables_vlarray", ["/vl_i32", "/vl_f64", "/vl_u8"])
def _pytables_vlarray(fn):
    with tables.open_file(fn, "w", title="seed") as f:
        r = rng("vlarray")
        for name, atom, dt in [("vl_i32", tables.Int32Atom(), "<i4"), ("vl_f64", tables.Float64Atom(), "<f8"),
                               ("vl_u8", tables.UInt8Atom(), "u1")]:
            vl = f.create_vlarray("/", name, atom, chunkshape=8, expectedrows=60, track_times=False)
            for i in range(60):
                n = 0 if i % 7 == 3 else int(r.integers(1, 12))
                vl.append((r.random(n) * 100).astype(dt))


# ------------------------------------------------------------ links, external storage

@seed("extlink", ["/local", "/ext", "/extraw"], aux=["ext_target.h5", "ext_raw.bin"])
def _extlink(fn):
    d = os.path.dirname(fn)
    with h5file(os.path.join(d, "ext_target.h5")) as t:
        t.create_dataset("data", data=values("et", (200, 3), "<i4"), chunks=(20, 3))
    raw = values("er", (150, 2), "<i4")
    with open(os.path.join(d, "ext_raw.bin"), "wb") as fh:
        fh.write(raw.tobytes())
    with h5file(fn) as f:
        f["local"] = values("el", (100,), "<i8")
        # relative: HDF5 looks for it beside the linking file, so a case file finds it in its own directory
        f["ext"] = h5py.ExternalLink("ext_target.h5", "/data")
        f.create_dataset("extraw", (150, 2), "<i4", external=[("ext_raw.bin", 0, raw.nbytes)])


def write_all(out):
    os.makedirs(out, exist_ok=True)
    manifest = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTables' NaturalNameWarning and friends
        for name, (fn, datasets, aux) in SEEDS.items():
            path = os.path.join(out, name + ".h5")
            fn(path)
            manifest[name] = {"file": name + ".h5", "datasets": datasets, "aux": aux,
                              "bytes": os.path.getsize(path)}
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: seeds.py DIR")
    for name, m in write_all(sys.argv[1]).items():
        print("%-18s %7d bytes  %s" % (name, m["bytes"], " ".join(m["datasets"])))
