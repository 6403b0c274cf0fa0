"""h5py_read.py - the second opinion: h5py (on its own, newer HDF5) reads
blocks of rows and prints them as ref_read.c does (plan.h's B lines), so
run.py can tell "HDF5 1.10.8 is wrong" from "multiload is wrong" when the
two disagree. A separate process, as h5py's HDF5 can crash too.

Usage: python h5py_read.py FILE JSON   where JSON is [[path, k, row0, n], ...]
"""

import json
import sys
import zlib

import numpy as np


def block(dset, row0, n):
    if dset.dtype.kind == "O" or h5py.check_vlen_dtype(dset.dtype) is not None:
        rows = dset[row0:row0 + n]
        counts = np.array([len(r) for r in rows], dtype="<u8")
        crc = zlib.crc32(counts.tobytes())
        total = counts.nbytes
        for r in rows:
            b = np.ascontiguousarray(r).tobytes()
            crc = zlib.crc32(b, crc)
            total += len(b)
        return crc, total
    a = dset[()] if dset.shape == () else dset[row0:row0 + n]
    b = np.ascontiguousarray(a).tobytes()
    return zlib.crc32(b), len(b)


if __name__ == "__main__":
    import h5py

    fn, reqs = sys.argv[1], json.loads(sys.argv[2])
    f = None
    try:
        f = h5py.File(fn, "r")
    except Exception as e:  # any refusal is an answer
        for path, k, row0, n in reqs:
            print("B %s P %d %d %d err -1 %s" % (path, k, row0, n, type(e).__name__))
        sys.exit(0)
    for path, k, row0, n in reqs:
        try:
            d = f[path]
            crc, total = block(d, row0, n)
            print("B %s P %d %d %d ok %08x %d" % (path, k, row0, n, crc, total), flush=True)
        except Exception as e:
            print("B %s P %d %d %d err -1 %s" % (path, k, row0, n, type(e).__name__), flush=True)
