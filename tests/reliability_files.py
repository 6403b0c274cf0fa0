"""Files and helpers for the reliability suite (tests/test_reliability_*.py).

Each test that damages a file writes its own copy under pytest's tmp_path,
so the session's shared files are never touched. The truth is always
h5py's reading of the undamaged file.
"""

import contextlib
import gc
import os
import struct
import subprocess
import sys

import h5py
import numpy as np

from multiload import QueueClosed, _core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Rows of every dataset in the data file; BLOCK divides it, CHUNK divides BLOCK.
N = 4000
BLOCK = 200
CHUNK = 100
COLS = 4

#: Seconds one get() may wait before the test counts it as a hang.
GET_TIMEOUT = 20

#: Both I/O engines, as get_queue(io_mode=...) names them.
IO_MODES = ("pread", "io_uring")


def values():
    """The rows every dataset of the data file holds: distinct per element."""
    return np.arange(N * COLS, dtype="<i4").reshape(N, COLS)


def write_data_file(fn, libver=None):
    """Datasets with the same values in every storage the corruption and
    fault tests need:

    contig  contiguous
    gz      chunked (CHUNK rows), deflate + shuffle
    f32     chunked, fletcher32 only
    gzf32   chunked, deflate + fletcher32
    plain   chunked, no filter (damage cannot be detected: no checksum)
    table   chunked compound rows (for field=)
    """
    v = values()
    kw = {"libver": libver} if libver else {}
    with h5py.File(fn, "w", **kw) as f:
        f.create_dataset("contig", data=v)
        f.create_dataset("gz", data=v, chunks=(CHUNK, COLS), compression="gzip", shuffle=True)
        f.create_dataset("f32", data=v, chunks=(CHUNK, COLS), fletcher32=True)
        f.create_dataset("gzf32", data=v, chunks=(CHUNK, COLS), compression="gzip", fletcher32=True)
        f.create_dataset("plain", data=v, chunks=(CHUNK, COLS))
        t = np.zeros(N, dtype=[("a", "<i4"), ("b", "<f8")])
        t["a"] = np.arange(N)
        t["b"] = np.arange(N) * 0.5
        f.create_dataset("table", data=t, chunks=(CHUNK,))
    return fn


def write_contig_last(fn):
    """One contiguous dataset whose data is the last thing in the file (so
    cutting the file cuts the data, not the metadata)."""
    with h5py.File(fn, "w") as f:
        f.create_dataset("contig", data=values())
    with h5py.File(fn, "r") as f:
        off = f["contig"].id.get_offset()
    assert off + values().nbytes == os.path.getsize(fn), "data is not at the end of the file"
    return off


def write_chunked_only(fn):
    """One chunked, deflated dataset: its chunks are the file's tail."""
    with h5py.File(fn, "w") as f:
        f.create_dataset("gz", data=values(), chunks=(CHUNK, COLS), compression="gzip")
    return fn


def truth(fn, path):
    with h5py.File(fn, "r") as f:
        return f[path][...]


def chunk_span(fn, path, i):
    """(file offset, stored bytes) of chunk i of a dataset, as h5py reports it."""
    with h5py.File(fn, "r") as f:
        ci = f[path].id.get_chunk_info(i)
        return ci.byte_offset, ci.size


def xor_bytes(fn, offset, n=8):
    """Invert n bytes at offset (so they certainly change)."""
    with open(fn, "r+b") as f:
        f.seek(offset)
        old = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in old))


def set_eof(fn, size):
    """Cut the file to `size` bytes and record that end of file in the
    version-0 superblock, so HDF5 opens it and only the data is missing."""
    os.truncate(fn, size)
    with open(fn, "r+b") as f:
        head = f.read(48)
        assert head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] == 0, "need a version-0 superblock"
        assert head[13] == 8, "need 8-byte addresses"
        f.seek(40)  # signature 8, versions and sizes 8, K values 4, flags 4, base, free-space
        f.write(struct.pack("<Q", size))


def find_address(fn, addr):
    """File offsets where the 8-byte little-endian address `addr` is stored."""
    data = open(fn, "rb").read()
    pat = struct.pack("<Q", addr)
    hits, at = [], data.find(pat)
    while at >= 0:
        hits.append(at)
        at = data.find(pat, at + 1)
    return hits


def drain(queue, limit=None):
    """Take every block: ({index: (start, copy)}, [exception]).

    Each get() is bounded by GET_TIMEOUT (a hang fails the test) and the
    number of gets by `limit` (default n_blocks + 1).
    """
    if limit is None:
        limit = queue.n_blocks + 1
    blocks, errors = {}, []
    for _ in range(limit + 5):
        try:
            guard = queue.get(timeout=GET_TIMEOUT)
        except TimeoutError:
            raise
        except Exception as e:  # noqa: BLE001 - the tests inspect each one
            errors.append(e)
            continue
        if guard is QueueClosed:
            return blocks, errors
        with guard as block:
            assert guard.index not in blocks, f"block {guard.index} handed out twice"
            blocks[guard.index] = (guard.start, np.array(block, copy=True))
    raise AssertionError(f"queue did not end after {limit + 5} gets")


def check_blocks(blocks, expected, block_size=BLOCK):
    """Every block handed out holds exactly h5py's rows."""
    for index, (start, data) in blocks.items():
        assert start == index * block_size
        want = expected[start:start + len(data)]
        assert data.dtype == want.dtype and data.shape == want.shape, index
        assert np.array_equal(data, want), f"block {index}: wrong data"


def block_of(exc):
    """The block number an error message names ('block 7: ...')."""
    msg = str(exc)
    at = msg.index("block ")
    return int(msg[at + 6:].split(":")[0])


@contextlib.contextmanager
def faults(spec):
    """MULTILOAD_FAULTS=spec for the duration (counters reset on entry and
    exit). Every queue opened inside must be closed inside: the rules are
    re-read only while no worker runs."""
    old = os.environ.get("MULTILOAD_FAULTS")
    os.environ["MULTILOAD_FAULTS"] = spec
    _core.fault_reload()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MULTILOAD_FAULTS", None)
        else:
            os.environ["MULTILOAD_FAULTS"] = old
        _core.fault_reload()


def open_fds():
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def n_threads():
    return len(os.listdir("/proc/self/task"))


def rss_kb():
    """Resident set size of this process, from /proc/self/status (kB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def run_python(code, timeout=60, env=None, **kw):
    """Run `code` in a fresh interpreter with this checkout importable.
    Returns the CompletedProcess; a hang raises subprocess.TimeoutExpired."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("MULTILOAD_FAULTS", None)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=full_env, **kw)
