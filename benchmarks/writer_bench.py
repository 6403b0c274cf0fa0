"""W13: writing a 1 GiB float32 dataset, chunked (1 MiB chunks), gzip-4 +
shuffle and uncompressed: multiload.Writer vs h5py (create_dataset(...,
compression="gzip", shuffle=True) filled in 64 MiB blocks) vs PyTables
(CArray, same chunks and filters), with fio's sequential write of the same
size on the same file system as the limit. Each run is a process of its
own (run.py's py_entry); the timed part includes the final flush/close and
an fsync, so every system is measured to durable bytes.

The data: float32 values of a smooth signal plus small noise, rounded to
1/64 (compresses to about a third with shuffle + gzip-4, like real
features); one 64 MiB buffer is made before the clock starts and written
16 times.
"""
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

TOTAL = 1 << 30
BLOCK = 64 << 20
ROW = 1024  # float32 per row: 4 KiB rows
CHUNK_ROWS = 256  # 1 MiB chunks
MULTILOAD = "multiload Writer"
H5PY = "h5py create_dataset + dset[i:j] ="
TABLES = "PyTables CArray[i:j] ="
FIO = "fio sequential write (psync 1 MiB, fsync at end)"


def _data():
    rng = np.random.default_rng(0)
    n = BLOCK // 4
    x = np.sin(np.arange(n, dtype=np.float64) * 1e-3) * 100 + rng.standard_normal(n)
    return (np.round(x * 64) / 64).astype("f4").reshape(-1, ROW)


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(spec):
    path, comp, func = spec["file"], spec["compressed"], spec["func"]
    if os.path.exists(path):
        os.unlink(path)
    block = _data()
    n_rows = TOTAL // (ROW * 4)
    kw = dict(compression="gzip", compression_opts=4, shuffle=True) if comp else {}
    c0, t0 = _cpu(), time.monotonic()
    if func == "multiload":
        import multiload
        with multiload.Writer(path, "w", n_procs=spec.get("n_procs")) as w:
            ds = w.create_dataset("/data", shape=(0, ROW), dtype="f4", chunks=(CHUNK_ROWS, ROW),
                                  maxshape=(None, ROW), **kw)
            for _ in range(TOTAL // BLOCK):
                ds.append(block)
            w.flush()
    elif func == "h5py":
        import h5py
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("/data", shape=(n_rows, ROW), dtype="f4", chunks=(CHUNK_ROWS, ROW), **kw)
            for i in range(TOTAL // BLOCK):
                ds[i * len(block):(i + 1) * len(block)] = block
        _fsync(path)
    elif func == "tables":
        import tables
        filters = tables.Filters(complevel=4, complib="zlib", shuffle=True) if comp else None
        with tables.open_file(path, "w") as f:
            a = f.create_carray("/", "data", tables.Float32Atom(), shape=(n_rows, ROW), chunkshape=(CHUNK_ROWS, ROW),
                                filters=filters)
            for i in range(TOTAL // BLOCK):
                a[i * len(block):(i + 1) * len(block)] = block
        _fsync(path)
    secs = time.monotonic() - t0
    cpu = _cpu() - c0
    stored = os.path.getsize(path)
    os.unlink(path)
    return dict(bytes=TOTAL, rows=n_rows, seconds=secs, cpu=cpu, stored_bytes=stored)


def fio_write_entry(Entry, system, path):
    def run_fio():
        cmd = ["fio", "--name=w13", f"--filename={path}", "--rw=write", "--bs=1M", "--ioengine=psync",
               f"--size={TOTAL}", "--end_fsync=1", "--output-format=json", "--unlink=1"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode:
            return dict(error=(p.stderr.strip().splitlines() or ["fio failed"])[-1])
        out = json.loads(p.stdout[p.stdout.index("{"):])
        wr = out["jobs"][0]["write"]
        # job_runtime covers the end fsync; write.runtime does not
        secs = out["jobs"][0].get("job_runtime", wr["runtime"]) / 1000
        return dict(bytes=wr["io_bytes"], rows=wr["io_bytes"] // (ROW * 4), seconds=secs)
    return Entry(system, "fio", run_fio, role="limit", note="fio psync bs=1M write, end_fsync=1")


def workloads(folder, py_entry, Workload, Entry):
    """W13's workloads for run.py's plan: files written in `folder` (the cache)."""
    here = os.path.abspath(__file__)
    path = os.path.join(folder, "w13_out.h5")
    out = []
    for comp, tag in ((True, "gzip-4 + shuffle"), (False, "uncompressed")):
        base = dict(file=path, compressed=comp)
        e = [py_entry(MULTILOAD, dict(base, func="multiload"), imports=["multiload", "numpy"], role="multiload",
                      script=here, note="append 64 MiB blocks, n_procs = all cores, flush (fsync)"),
             py_entry(H5PY, dict(base, func="h5py"), imports=["h5py", "numpy"], script=here,
                      note="64 MiB slices, then fsync"),
             py_entry(TABLES, dict(base, func="tables"), imports=["tables", "numpy"], script=here,
                      note="64 MiB slices, then fsync")]
        if not comp:
            e.append(fio_write_entry(Entry, FIO, path + ".fio"))
        out.append(Workload(f"W13 {'gzip' if comp else 'raw'}", f"writing 1 GiB of float32, 1 MiB chunks, {tag}",
                            here, e, ref=MULTILOAD))  # path: a file to "warm" (the outputs are made fresh)
    return out


def main():
    spec = json.loads(sys.argv[1])
    try:
        res = run(spec)
    except BaseException as e:  # the run reports it
        res = dict(error=f"{type(e).__name__}: {e}")
    print("@@RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
