"""Every kept fuzz finding (tests/fuzz_regressions/index.json, written by
fuzz/keep.py) opened with multiload's Python API, Reader and Streamer: each
read either raises an exception that names the file, or returns exactly
the bytes h5py returns for the same rows. Bytes where h5py refuses are a
failure too: multiload must not read what HDF5 itself will not.

Reads are bounded (the first and last ROWS rows), since a regression file
may claim 2^62 rows."""

import json
import os
import pickle
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest

import multiload

pytestmark = pytest.mark.timeout(60)

HERE = os.environ.get("MULTILOAD_FUZZ_REGRESSIONS",
                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_regressions"))
ROWS = 256
REFUSALS = (OSError, ValueError, TypeError, KeyError, IndexError, MemoryError, RuntimeError)


def index():
    with open(os.path.join(HERE, "index.json")) as fh:
        return json.load(fh)


def cases():
    return [pytest.param(e, p, id="%s:%s" % (e["file"], p)) for e in index() for p in e["datasets"]]


def spans(n):
    """Row ranges to read from a dataset of n rows: the first and the last ROWS."""
    if n <= 2 * ROWS:
        return [(0, n)]
    return [(0, ROWS), (n - ROWS, n)]


def h5py_rows(fn, path, start, stop):
    """h5py's rows (VLArray rows concatenated, as multiload returns them), or the exception."""
    try:
        with h5py.File(fn, "r") as f:
            d = f[path]
            if h5py.check_vlen_dtype(d.dtype) is not None:
                rows = d[start:stop]
                return np.concatenate(rows) if len(rows) else np.empty(0, h5py.check_vlen_dtype(d.dtype))
            return d[()] if d.shape == () else d[start:stop]
    except Exception as e:  # noqa: BLE001 - a refusal is an answer
        return e


def check(fn, got, want, what):
    if isinstance(got, BaseException):
        assert isinstance(got, REFUSALS), "%s: %r is not a refusal" % (what, got)
        assert fn in str(got) or os.path.basename(fn) in str(got), "%s: the error does not name the file: %r" % (
            what, got)
        return
    assert not isinstance(want, BaseException), "%s: multiload returned data where h5py raises %r" % (what, want)
    # Byte for byte, in one byte order: multiload may hand out a big-endian dataset in native order.
    got, want = (np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))) for a in (got, want))
    assert got.tobytes() == want.tobytes(), "%s: bytes differ from h5py's" % what


def reader_rows(fn, path, start, stop):
    r = multiload.Reader(fn, n_procs=2)
    try:
        ds = r.get_dataset(path)
        return r.read(ds[start:stop])
    except Exception as e:  # noqa: BLE001
        return e
    finally:
        r.close()


def streamer_rows(fn, path, n):
    """The whole dataset streamed as one block (n rows)."""
    try:
        with multiload.Streamer(fn) as s:
            with s.get_queue(path, block_size=n, n_procs=2, remainder=True) as q:
                guard = q.get(timeout=20)
                if guard is multiload.QueueClosed:
                    return np.empty(0)
                with guard as block:
                    return np.array(block, copy=True)
    except Exception as e:  # noqa: BLE001
        return e


def test_index_lists_every_file():
    listed = {e["file"] for e in index()}
    aux = {a for e in index() for a in e.get("aux", [])}
    on_disk = {f for f in os.listdir(HERE) if f.endswith(".h5")} - aux
    assert listed == on_disk
    for e in index():
        assert e["description"].strip() and e["datasets"], e


def h5py_rows_apart(fn, path, start, stop):
    """h5py's rows read in a child process (HDF5 1.10.8 crashes on some
    kept files: it must not take the test with it): the array, the
    exception, or None if the child crashed."""
    code = ("import sys, pickle, h5py\n"
            "try:\n"
            "    with h5py.File(sys.argv[1], 'r') as f:\n"
            "        out = f[sys.argv[2]][int(sys.argv[3]):int(sys.argv[4])]\n"
            "except Exception as e:\n"
            "    out = OSError(str(e))\n"
            "sys.stdout.buffer.write(pickle.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code, fn, path, str(start), str(stop)], capture_output=True,
                          timeout=60)
    return pickle.loads(proc.stdout) if proc.returncode == 0 else None


@pytest.mark.parametrize("entry,path", cases())
def test_regression_file(entry, path):
    fn = os.path.join(HERE, entry["file"])
    if entry.get("hdf5_crashes"):
        # HDF5 1.10.8's own read crashes on part of it: multiload must not
        # crash (it did), and where h5py in a child process reads the rows,
        # return exactly its bytes or refuse; where h5py crashes, refuse or
        # return rows (nothing says what the bytes should be).
        for start, stop in ((0, 1), (0, ROWS)):
            got = reader_rows(fn, path, start, stop)
            want = h5py_rows_apart(fn, path, start, stop)
            if want is None:
                assert isinstance(got, REFUSALS) or isinstance(got, np.ndarray), repr(got)
            else:
                check(fn, got, want, "Reader %s[%d:%d]" % (path, start, stop))
        return
    vlen = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with h5py.File(fn, "r") as f:
                n = 1 if f[path].shape == () else f[path].shape[0]
                vlen = h5py.check_vlen_dtype(f[path].dtype) is not None
        except Exception:  # noqa: BLE001 - h5py refuses the dataset: multiload must too
            n = 1
        for start, stop in spans(n):
            want = h5py_rows(fn, path, start, stop)
            check(fn, reader_rows(fn, path, start, stop), want, "Reader %s[%d:%d]" % (path, start, stop))
        if 0 < n <= 2 * ROWS and not vlen:  # the Streamer reads fixed-size rows only
            check(fn, streamer_rows(fn, path, n), h5py_rows(fn, path, 0, n), "Streamer %s" % path)
