"""Seed corpus for fuzz_chunk_index: real HDF5 files written by h5py, each
chunked dataset turned into one harness input (harness.h: a parameter
header, then the file image).

The files cover what ml_chunk_index_locate and ml_chunk_index_walk parse:
1-, 2- and 3-D chunked datasets under h5py's default libver (version 1
object headers, layout message 3, a version 1 B-tree), B-trees of one,
two and three levels at HDF5's default K of 32 (one leaf; >64 chunks;
>4096 chunks) and deep ones at K = 1 and 2 so that deep trees stay small,
partial edge chunks, sparse and never-written datasets, deflate (stored
sizes that vary), a user block, 4-byte addresses and lengths, and a few
libver='latest' files (version 2 object headers, layout message 4 with
the other index kinds) so locate's other branches have seeds too.

h5py exposes neither H5Pset_istore_k nor H5Pget_istore_k, so both are
called through ctypes on the libhdf5 h5py has loaded (same library, same
property list ids).

Usage: make_corpus.py OUTDIR   (writes OUTDIR/*.bin and prints a manifest)
"""
import ctypes
import os
import struct
import sys
import tempfile

import h5py
import numpy as np


def loaded_libhdf5():
    """The libhdf5 shared object h5py is linked to, from this process's maps."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            name = os.path.basename(path)
            if name.startswith("libhdf5") and "_hl" not in name and ".so" in name:
                return ctypes.CDLL(path)
    raise RuntimeError("h5py's libhdf5 is not mapped: cannot set istore_k")


H5 = loaded_libhdf5()
H5.H5Pset_istore_k.argtypes = [ctypes.c_int64, ctypes.c_uint]
H5.H5Pget_istore_k.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_uint)]


def new_file(path, istore_k=None, sizes=None, userblock=0, libver=None):
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    if istore_k is not None and H5.H5Pset_istore_k(fcpl.id, istore_k) < 0:
        raise RuntimeError("H5Pset_istore_k failed")
    if sizes:
        fcpl.set_sizes(*sizes)
    if userblock:
        fcpl.set_userblock(userblock)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    if libver:
        fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fid = h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    return h5py.File(fid)


def max_btree_level(image):
    """Deepest level among the chunk B-tree nodes (TREE, type 1) in the file."""
    level, at = -1, image.find(b"TREE\x01")
    while at >= 0:
        level = max(level, image[at + 5])
        at = image.find(b"TREE\x01", at + 1)
    return level


def harness_input(f, dset, image):
    """The parameter header of harness.h for dset, then the image."""
    fcpl = f.id.get_create_plist()
    sa, ss = fcpl.get_sizes()
    k = ctypes.c_uint()
    if H5.H5Pget_istore_k(fcpl.id, ctypes.byref(k)) < 0:
        raise RuntimeError("H5Pget_istore_k failed")
    ohdr = h5py.h5o.get_info(dset.id).addr  # relative to the base, like every HDF5 address
    head = struct.pack("<BBHB3xQQ", sa, ss, k.value, dset.ndim, fcpl.get_userblock(), ohdr)
    return head + b"".join(struct.pack("<Q", n) for n in dset.shape) + image, (sa, ss, k.value, ohdr)


# name: (file options, [(dataset name, shape, chunks, maxshape, what to write, create kwargs)])
# what to write: "all", "none", or a list of chunk-aligned slices' starts along axis 0.
FILES = {
    "1d": ({}, [
        ("one_chunk", (10,), (10,), None, "all", {}),
        ("leaf_25", (100,), (4,), None, "all", {}),
        ("edge", (103,), (10,), None, "all", {}),
        ("sparse", (1000,), (10,), None, [30, 500, 970], {}),
        ("unwritten", (50,), (5,), None, "none", {}),
        ("levels2_200", (200,), (1,), None, "all", {}),
    ]),
    "2d": ({}, [
        ("grid_12x12", (120, 120), (10, 10), None, "all", {}),
        ("edge_7x5", (61, 43), (9, 9), None, "all", {}),
        ("deflate", (64, 64), (16, 8), None, "all", {"compression": "gzip", "shuffle": True}),
    ]),
    "3d": ({}, [
        ("edge", (6, 7, 8), (2, 3, 4), None, "all", {}),
        ("sparse", (20, 20, 20), (5, 5, 5), None, [0, 15], {}),
    ]),
    "levels3": ({}, [("n5000", (5000,), (1,), None, "all", {})]),
    "k1": ({"istore_k": 1}, [
        ("deep_1d", (64,), (1,), None, "all", {}),
        ("deep_2d", (12, 10), (3, 2), None, "all", {}),
    ]),
    "k2": ({"istore_k": 2}, [
        ("1d_40", (40,), (1,), None, "all", {}),
        ("3d", (8, 8, 8), (2, 4, 2), None, "all", {}),
        ("sparse", (100,), (2,), None, [0, 20, 22, 60, 98], {}),
    ]),
    "userblock": ({"userblock": 512}, [("2d", (30, 40), (7, 8), None, "all", {})]),
    "sizes4": ({"sizes": (4, 4), "istore_k": 4}, [("1d", (300,), (7,), None, "all", {})]),
    "latest": ({"libver": "latest"}, [
        ("farray", (100,), (10,), None, "all", {}),
        ("earray", (100,), (10,), (None,), "all", {}),
        ("btree2", (20, 20), (5, 5), (None, None), "all", {}),
        ("single", (10, 10), (10, 10), None, "all", {}),
        ("single_deflate", (10, 10), (10, 10), None, "all", {"compression": "gzip"}),
    ]),
}


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(10)
    print(f"{'seed':28} {'rank':>4} {'chunks':>6} {'levels':>6} {'K':>3} {'sa/ss':>5} {'base':>4} {'bytes':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for group, (opts, dsets) in FILES.items():
            for name, shape, chunks, maxshape, write, kw in dsets:
                # One dataset per file: the image is small and its B-tree nodes are all this dataset's.
                seed = f"{group}_{name}"
                path = os.path.join(tmp, seed + ".h5")
                with new_file(path, **opts) as f:
                    d = f.create_dataset(name, shape=shape, chunks=chunks, maxshape=maxshape, dtype="u1",
                                         fillvalue=7, **kw)
                    data = rng.integers(0, 4, size=shape, dtype="u1")  # compressible, not constant
                    if write == "all":
                        d[...] = data
                    elif write != "none":
                        for start in write:
                            d[start:start + chunks[0]] = data[start:start + chunks[0]]
                with open(path, "rb") as fh:
                    image = fh.read()
                with h5py.File(path, "r") as f:
                    d = f[name]
                    blob, (sa, ss, k, _) = harness_input(f, d, image)
                    with open(os.path.join(outdir, seed + ".bin"), "wb") as out:
                        out.write(blob)
                    sizes = f"{sa}/{ss}"
                    print(f"{seed:28} {d.ndim:4} {d.id.get_num_chunks():6} {max_btree_level(image) + 1:6} {k:3} "
                          f"{sizes:>5} {f.id.get_create_plist().get_userblock():4} {len(blob):7}")

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
