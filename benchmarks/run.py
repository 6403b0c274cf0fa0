"""`make bench`: multiload beside its peers and the machine's limits.

One run measures every workload of issue 5 (W1-W7) and issue 11 (W8) on multiload, h5py,
PyTables, numpy.memmap, multitables 2.0.1 and torch's DataLoader, and the
limits (fio io_uring/psync reads of the same files, memcpy, libdeflate on
the files' own chunks), on the same files, in one command:

  - every run is a fresh process (benchmarks/systems.py, fio, or the C
    helper benchmarks/limits.c), so peak RSS and CPU time are one system's;
  - runs of different systems are interleaved (repetition r runs every
    system of a workload once, in an order rotated by r) so machine noise
    hits them alike; each figure is the median of --reps runs, min and max
    beside it;
  - the file is read right before every warm run (this machine evicts idle
    page-cache pages after about a minute) and the fraction of it that was
    resident is recorded (mincore); cold runs drop the page cache first
    when /proc/sys/vm/drop_caches is writable;
  - os.getloadavg() is recorded before every run.

Writes benchmarks/results/<time>.json (every run), docs/benchmarks.json
(the same), docs/benchmarks.md (tables, ratios against the issue's
targets, notes from benchmarks/notes.md) and docs/bench-*.png.

Usage: python benchmarks/run.py [--cache DIR] [--full] [--reps N]
                                [--only W1,W3,...] [--scale F] [--no-docs]
"""

import argparse
import ctypes
import datetime
import inspect
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import files  # noqa: E402
import scaleout  # noqa: E402  (W9)
import loader_process  # noqa: E402  (W12)
import image_folder  # noqa: E402  (W11)
import writer_bench  # noqa: E402  (W13)
import budgets  # noqa: E402  (W14)

PY = sys.executable
MT_PY = os.path.join(ROOT, ".venv-multitables", "bin", "python")
SYSTEMS = os.path.join(HERE, "systems.py")
DOCS = os.path.join(ROOT, "docs")
DROP = "/proc/sys/vm/drop_caches"
MIB = 1 << 20
# numpy's OpenBLAS thread spins for ~0.1 s of CPU right after `import numpy`,
# stealing a core from the first ~100 ms of every run on 2 cores; no
# workload uses BLAS (W7's torch sets its own threads), so every system
# runs with one OpenBLAS thread.
CHILD_ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1")
CONTIGUOUS_BLOCK = 1 * MIB  # block bytes of every system in W1 (multiload's default is 128 KiB)


# ------------------------------------------------------------ environment


def drop_caches_possible():
    if not os.access(DROP, os.W_OK):
        return False, f"{DROP} is not writable (not root, or a read-only /proc)"
    try:
        os.sync()
        with open(DROP, "w") as f:
            f.write("1\n")
        return True, "dropped with `echo 1 > /proc/sys/vm/drop_caches` before every cold run"
    except OSError as e:
        return False, f"writing {DROP} failed: {e}"


def drop_caches():
    os.sync()
    with open(DROP, "w") as f:
        f.write("1\n")


def warm(path):
    if os.path.isdir(path):  # a folder of files (W11): each of them
        for root, _, names in os.walk(path):
            for n in names:
                warm(os.path.join(root, n))
        return
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def resident(path):
    """Fraction of the file's pages in the page cache (mincore), or None;
    for a folder (W11), the mean over its files."""
    if os.path.isdir(path):
        fr = [resident(os.path.join(root, n)) for root, _, names in os.walk(path) for n in names]
        return None if not fr or None in fr else sum(fr) / len(fr)
    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        pages = (size + 4095) // 4096
        vec = ctypes.create_string_buffer(pages)
        rc = _libc.mincore(addr, size, vec)
        _libc.munmap(addr, size)
        if rc != 0:
            return None
        return sum(b & 1 for b in vec.raw) / pages
    finally:
        os.close(fd)


def machine():
    info = dict(kernel=platform.release(), cores=os.cpu_count(), python=platform.python_version())
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.split(":")[0].strip() in ("L1d cache", "L2 cache", "L3 cache"):
                info[line.split(":")[0].strip()] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return info


def versions(have_mt):
    v = {}
    code = ("import json, numpy, h5py, tables; d = dict(numpy=numpy.__version__, h5py=h5py.__version__, "
            "hdf5=h5py.version.hdf5_version, tables=tables.__version__)\n"
            "try:\n import multiload; d['multiload'] = multiload.__version__; d['multiload_io'] = multiload.io_mode()\n"
            "except Exception as e: d['multiload'] = repr(e)\n"
            "try:\n import torch; d['torch'] = torch.__version__\nexcept Exception as e: d['torch'] = 'not available: ' + repr(e)\n"
            "try:\n import matplotlib; d['matplotlib'] = matplotlib.__version__\nexcept Exception as e: d['matplotlib'] = repr(e)\n"
            "print(json.dumps(d))")
    v.update(json.loads(subprocess.run([PY, "-c", code], capture_output=True, text=True).stdout))
    if have_mt:
        code = ("import json, numpy, tables, importlib.metadata as m; print(json.dumps(dict("
                "multitables=m.version('multitables'), numpy=numpy.__version__, tables=tables.__version__)))")
        out = subprocess.run([MT_PY, "-c", code], capture_output=True, text=True).stdout
        v["multitables_venv"] = json.loads(out) if out.strip() else "failed"
    fio = shutil.which("fio")
    v["fio"] = subprocess.run([fio, "--version"], capture_output=True, text=True).stdout.strip() if fio else None
    v["gcc"] = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    return v


def multitables_status():
    if not os.path.exists(MT_PY):
        return False, "no .venv-multitables (run `make bench-deps`)"
    r = subprocess.run([MT_PY, "-c", "import multitables"], capture_output=True, text=True)
    if r.returncode:
        return False, "multitables 2.0.1 does not import: " + r.stderr.strip().splitlines()[-1]
    return True, ""


def build_limits(cache):
    os.makedirs(cache, exist_ok=True)  # a fresh machine has no cache folder yet
    exe = os.path.join(cache, "limits")
    src = os.path.join(HERE, "limits.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.run(["gcc", "-O2", "-o", exe, src, "-lpthread", "-ldeflate"], check=True)
    return exe


# ---------------------------------------------------------------- entries


class Entry:
    """One system (or limit) of one workload: how to run it once."""

    def __init__(self, system, kind, run=None, missing=None, note="", role="peer"):
        self.system, self.kind, self.run, self.missing, self.note, self.role = \
            system, kind, run, missing, note, role


def py_entry(system, spec, python=PY, imports=(), role="peer", note="", script=SYSTEMS):
    spec = dict(spec, imports=list(imports))

    def run():
        # Output to files, not pipes: a worker process a peer leaves behind
        # keeps a pipe open and would stall us. The whole session is killed
        # after the run, so no stray process loads the machine later.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.Popen([python, script, json.dumps(spec)], stdout=out, stderr=err,
                                 start_new_session=True, env=CHILD_ENV)
            try:
                rc = p.wait(timeout=600)
            except subprocess.TimeoutExpired:
                rc = "timeout after 600 s"
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        for line in stdout.splitlines():
            if line.startswith("@@RESULT "):
                return json.loads(line[len("@@RESULT "):])
        return dict(error=f"exit {rc}: " + (stderr.strip().splitlines() or ["?"])[-1])
    return Entry(system, "python", run, role=role, note=note)


def fio_entry(system, path, bs, rw="read", jobs=1, engine="io_uring", direct=False, cold=False,
              runtime=None, role="limit", row_bytes=1024, iodepth=16):
    size = os.path.getsize(path)
    part = size // jobs // bs * bs

    def run():
        cmd = ["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
               f"--ioengine={engine}", f"--numjobs={jobs}", "--thread", "--group_reporting",
               "--output-format=json", f"--direct={int(direct)}",
               f"--invalidate={int(bool(cold))}"]
        if engine != "psync":
            cmd.append(f"--iodepth={iodepth}")
        if runtime:
            cmd += ["--time_based", f"--runtime={runtime}", f"--size={size // bs * bs}"]
        else:
            cmd += [f"--size={part}", f"--offset_increment={part}"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode:
            return dict(error=(p.stderr.strip().splitlines() or ["fio failed"])[-1])
        out = json.loads(p.stdout[p.stdout.index("{"):])
        rd = out["jobs"][0]["read"]
        secs = rd["runtime"] / 1000
        return dict(bytes=rd["io_bytes"], rows=rd["io_bytes"] // row_bytes, ios=rd["total_ios"], seconds=secs,
                    p50=_fio_pct(rd, "50.000000"), p99=_fio_pct(rd, "99.000000"),
                    cpu=(out["jobs"][0]["usr_cpu"] + out["jobs"][0]["sys_cpu"]) / 100 * secs * jobs)
    return Entry(system, "fio", run, role=role,
                 note=f"fio {engine} bs={bs} {f'iodepth={iodepth} ' if engine != 'psync' else ''}jobs={jobs}"
                      f"{' O_DIRECT' if direct else ''}")


def _fio_pct(rd, key):
    lat = rd.get("clat_ns", {}).get("percentile", {})
    return lat[key] / 1e9 if key in lat else None


def limits_entry(system, exe, args, rows_per_byte=0.0, role="limit", note=""):
    def run():
        p = subprocess.run([exe] + [str(a) for a in args], capture_output=True, text=True, timeout=600)
        if p.returncode:
            return dict(error=p.stderr.strip() or f"exit {p.returncode}")
        out = json.loads(p.stdout)
        out["rows"] = int(out["bytes"] * rows_per_byte)
        return out
    return Entry(system, "limits", run, role=role, note=note)


def missing(system, reason, role="peer"):
    return Entry(system, "missing", missing=reason, role=role)


# -------------------------------------------------------------- workloads


class Workload:
    def __init__(self, key, title, path, entries, warm=True, unit="GB/s", ref=None):
        self.key, self.title, self.path, self.entries, self.warm, self.unit = \
            key, title, path, entries, warm, unit
        self.ref = ref  # system the "multiload ÷ this" column divides by


def block_of(path, dataset):
    import multiload.streamer as ms
    import multiload._core as core

    layout = core.Layout(path, dataset)
    return ms.default_block_size(layout), layout


def plan(args, paths, exe, have_mt, mt_reason, can_drop):
    ml = ["multiload", "numpy"]
    h5 = ["h5py", "numpy"]
    tb = ["tables", "numpy"]
    mt = ["multitables", "numpy", "tables"]

    def mt_entry(system, spec):
        if not have_mt:
            return missing(system, mt_reason)
        return py_entry(system, spec, python=MT_PY, imports=mt)

    W = []
    # W1 / W2 / W3: sequential blocks, warm
    for key, title, path in (("W1", "contiguous float32 2-D, sequential blocks, warm", paths["w1"]),
                             ("W2", "chunked (256 KiB chunks), uncompressed, warm", paths["w2"]),
                             ("W3", "chunked, deflate 4 + shuffle, warm", paths["w3"])):
        B, layout = block_of(path, "/data")
        default_B = B
        if layout.chunks is None:
            # Contiguous: every system reads 1 MiB blocks, the size that streams
            # fastest here; multiload's default (multitables' 128 KiB) gets a row too.
            B = max(1, CONTIGUOUS_BLOCK // layout.row_bytes)
        base = dict(file=path, path="/data", block=B)
        e = [py_entry("multiload n_procs=2", dict(base, func="seq-multiload", n_procs=2), imports=ml,
                      role="multiload"),
             py_entry("multiload n_procs=1", dict(base, func="seq-multiload", n_procs=1), imports=ml,
                      role="multiload"),
             py_entry("h5py dset[i:i+B]", dict(base, func="seq-h5py"), imports=h5),
             py_entry("h5py read_direct", dict(base, func="seq-h5py", direct=True), imports=h5),
             py_entry("PyTables read()", dict(base, func="seq-tables"), imports=tb),
             mt_entry("multitables n_procs=2", dict(base, func="seq-multitables", n_procs=2))]
        if default_B != B:
            e.insert(2, py_entry(f"multiload n_procs=2, default block ({default_B * layout.row_bytes >> 10} KiB)",
                                 dict(base, func="seq-multiload", n_procs=2, block=default_B), imports=ml,
                                 role="multiload"))
        if key == "W1":
            e.append(py_entry("numpy.memmap copy", dict(base, func="seq-memmap", dtype="<f4",
                                                        offset=layout.offset, shape=layout.shape),
                              imports=["numpy"], note="copy each block out of a memmap (no HDF5)"))
        if key in ("W1", "W2"):
            bs = B * layout.row_bytes
            for engine in ("io_uring", "psync"):
                for j in (1, 2):
                    e.append(fio_entry(f"fio {engine} {j} job{'s' * (j > 1)}", path, bs, jobs=j, engine=engine,
                                      row_bytes=layout.row_bytes))
        if key == "W1":
            for nbytes, where in ((1 * MIB, "1 MiB, in cache"), (64 * MIB, "64 MiB, past L3")):
                for t in (1, 2):
                    e.append(limits_entry(f"memcpy {where}, {t} thread{'s' * (t > 1)}", exe,
                                          ["memcpy", nbytes, t, 0.25],
                                          rows_per_byte=1 / layout.row_bytes))
        if key == "W3":
            lst, chunk_bytes = files.chunk_list(path)
            for t in (1, 2):
                e.append(limits_entry(f"libdeflate, {t} thread{'s' * (t > 1)}", exe,
                                      ["inflate", path, lst, t, chunk_bytes],
                                      rows_per_byte=1 / layout.row_bytes,
                                      note="libdeflate on the file's own chunks, from memory"))
        W.append(Workload(key, title, path, e, ref="multiload n_procs=2"))

    # Cold W1: page cache dropped before every run
    if can_drop:
        path = paths["w1"]
        _, layout = block_of(path, "/data")
        B = max(1, CONTIGUOUS_BLOCK // layout.row_bytes)
        base = dict(file=path, path="/data", block=B)
        bs = B * layout.row_bytes
        import multiload

        e = [py_entry("multiload n_procs=2", dict(base, func="seq-multiload", n_procs=2), imports=ml,
                      role="multiload")]
        if "direct" in inspect.signature(multiload.Streamer.get_queue).parameters:
            e.append(py_entry("multiload direct=True", dict(base, func="seq-multiload", n_procs=2,
                                                            direct=True), imports=ml, role="multiload"))
        else:
            e.append(missing("multiload direct=True", "Streamer.get_queue has no direct= option "
                             "(O_DIRECT reads into the aligned slots are not implemented)", role="multiload"))
        e += [py_entry("h5py dset[i:i+B]", dict(base, func="seq-h5py"), imports=h5),
              py_entry("PyTables read()", dict(base, func="seq-tables"), imports=tb),
              py_entry("numpy.memmap copy", dict(base, func="seq-memmap", dtype="<f4",
                                                 offset=layout.offset, shape=layout.shape), imports=["numpy"]),
              mt_entry("multitables n_procs=2", dict(base, func="seq-multitables", n_procs=2))]
        # The storage's limit is whichever of these is fastest on the run
        # (W1_COLD_FIO): one sequential buffered stream (what PyTables and
        # numpy.memmap get from the kernel's readahead), two, and O_DIRECT
        # queues deep enough for the device (iodepth 32/64 of 1 MiB reads).
        for system, kw in W1_COLD_FIO_RUNS:
            e.append(fio_entry(system, path, bs, cold=not kw.get("direct"), row_bytes=layout.row_bytes, **kw))
        W.append(Workload("W1-cold", "W1 from storage (page cache dropped before each run)", path, e,
                          warm=False, ref="multiload n_procs=2"))

    # W4: PyTables Table, compound rows
    path = paths["w4"]
    B, layout = block_of(path, "/table")
    base = dict(file=path, path="/table", block=B)
    W.append(Workload("W4", "PyTables Table, compound row (16 float32 + int64), sequential", path, [
        py_entry("multiload n_procs=2", dict(base, func="seq-multiload", n_procs=2), imports=ml, role="multiload"),
        py_entry("multiload n_procs=1", dict(base, func="seq-multiload", n_procs=1), imports=ml, role="multiload"),
        py_entry("PyTables read()", dict(base, func="seq-tables"), imports=tb),
        py_entry("h5py dset[i:i+B]", dict(base, func="seq-h5py"), imports=h5),
        mt_entry("multitables n_procs=2", dict(base, func="seq-multitables", n_procs=2))],
        ref="multiload n_procs=2"))

    # W5: random access
    import multiload

    has_reader = hasattr(multiload, "Reader")
    for src, path in (("contiguous", paths["w1"]), ("deflate", paths["w3"])):
        B, layout = block_of(path, "/data")
        n = layout.shape[0]
        for kind, batch, is_sorted in (("256 sorted", 256, True), ("256 unsorted", 256, False),
                                       ("single rows", 1, True)):
            if src == "contiguous":
                # Enough requests that each system's one-time open (a Reader's
                # first HDF5 open in a process: ~6 ms) is not what is measured.
                count = 1000 if batch > 1 else 20000
            else:
                # Random access to compressed data is a training loop's: many
                # batches from one dataset, so chunks come back (each 256-row
                # batch touches ~40% of the 512 chunks). A few batches would
                # measure only the first decode of each chunk.
                count = 48 if batch > 1 else 1500
            count = max(1, int(count * (2 if args.full else 1)))
            base = dict(file=path, path="/data", n_rows=n, batch=batch, count=count, sorted=is_sorted)
            e = [py_entry("multiload Reader", dict(base, func="rand-multiload"), imports=ml, role="multiload")
                 if has_reader else missing("multiload Reader", "multiload.Reader does not exist yet "
                                            "(being built in multiload/reader.py)", role="multiload"),
                 py_entry("h5py fancy indexing", dict(base, func="rand-h5py"), imports=h5),
                 py_entry("PyTables fancy indexing", dict(base, func="rand-tables"), imports=tb),
                 mt_entry("multitables Reader", dict(base, func="rand-multitables", n_procs=2))]
            if src == "deflate":
                e.insert(2, py_entry("h5py fancy, chunk cache = dataset", dict(base, func="rand-h5py",
                                                                              rdcc=n * layout.row_bytes),
                                     imports=h5, role="reference",
                                     note="h5py with rdcc_nbytes the decoded dataset: h5py tuned as multiload sizes its cache"))
            if src == "contiguous":
                e.append(py_entry("numpy.memmap gather", dict(base, func="rand-memmap", dtype="<f4",
                                                              offset=layout.offset, shape=layout.shape),
                                  imports=["numpy"], role="peer"))
                if batch > 1 and is_sorted:
                    for j in (1, 2):
                        e.append(fio_entry(f"fio io_uring randread 1 KiB, {j} job{'s' * (j > 1)}", path,
                                           layout.row_bytes, rw="randread", jobs=j, runtime="400ms",
                                           row_bytes=layout.row_bytes))
            W.append(Workload(f"W5 {src} {kind}", f"random access, {kind} from the {src} file", path, e,
                              unit="rows/s", ref="multiload Reader"))

    # W6: per-block overhead
    path = paths["w6"]
    base = dict(file=path, path="/data", block=1)
    W.append(Workload("W6", "per-block overhead: one 4 KiB row per block, warm", path, [
        py_entry("multiload n_procs=1", dict(base, func="seq-multiload", n_procs=1), imports=ml, role="multiload"),
        py_entry("multiload n_procs=2", dict(base, func="seq-multiload", n_procs=2), imports=ml, role="multiload"),
        py_entry("h5py dset[i:i+1]", dict(base, func="seq-h5py"), imports=h5),
        py_entry("PyTables read(i, i+1)", dict(base, func="seq-tables"), imports=tb),
        mt_entry("multitables n_procs=2", dict(base, func="seq-multitables", n_procs=2))],
        unit="us/block", ref="multiload n_procs=1"))

    # W7: training loop
    path = paths["w1"]
    n_batches = 400 if args.full else 60
    base = dict(file=path, path="/data", batch=256, batches=n_batches, cols=files.ROW, func="train",
                n_rows=block_of(path, "/data")[1].shape[0])
    tt = ["torch", "numpy", "h5py"]
    W.append(Workload("W7", "training loop: batches of 256 rows + a small matmul each (torch, 1 thread)",
                      path, [
        py_entry("multiload queue", dict(base, feed="multiload"), imports=tt + ["multiload"], role="multiload"),
        py_entry("DataLoader(h5py) workers=0", dict(base, feed="dataloader", workers=0), imports=tt),
        py_entry("DataLoader(h5py) workers=2", dict(base, feed="dataloader", workers=2), imports=tt),
        mt_entry("multitables generator", dict(base, feed="multitables"))
        if _mt_has_torch() else missing("multitables generator", "torch is not installed in .venv-multitables")],
        unit="rows/s", ref="multiload queue"))

    # W10: files written with libver='latest' (layout-4 chunk indices), 25,000 chunks: open + stream
    for name, _ in files.W10_INDEXES:
        B = 256
        base = dict(file=paths["w10"], path=f"/{name}", block=B)
        W.append(Workload(f"W10 {name}", f"open + stream, libver='latest', {files.W10_ROWS // files.W10_CHUNK:,} "
                                         f"chunks of {files.W10_CHUNK} rows, {name} index, blocks of {B} rows",
                          paths["w10"], [
            py_entry("multiload n_procs=2", dict(base, func="seq-multiload", n_procs=2), imports=ml, role="multiload"),
            py_entry("h5py dset[i:i+B]", dict(base, func="seq-h5py"), imports=h5),
            py_entry("PyTables read()", dict(base, func="seq-tables"), imports=tb)],
            unit="rows/s", ref="multiload n_procs=2"))
    # W10 open: the cost of opening, per chunk, from 10^3 to 10^6 chunks (linear: a flat line)
    for c in files.W10_OPEN_CHUNKS:
        base = dict(file=paths[f"w10open{c}"], path="/d", chunks=c)
        W.append(Workload(f"W10 open {c:.0e}", f"opening a dataset of {c:,} chunks (extensible array index), "
                                               "µs per chunk", paths[f"w10open{c}"], [
            py_entry("multiload open", dict(base, func="open-multiload"), imports=ml, role="multiload",
                     note="open and the chunk table a first read fills: the index walked in one pass, "
                          "checked against HDF5"),
            py_entry("h5py open + chunk_iter", dict(base, func="open-h5py"), imports=h5,
                     note="HDF5's own walk of every chunk (h5py's bundled HDF5)")],
            unit="us/block", ref="multiload open"))

    # W8: one shuffled epoch of images + labels
    W.append(Workload("W8", "one shuffled epoch of 64×64 uint8 images + int64 labels, batches of 256 "
                            "(torch tensors + a tiny matmul each, 1 thread)", paths["w8"], w8_entries(paths),
                      unit="rows/s", ref=W8_REF))
    W += scaleout.workloads(paths, py_entry, Workload)
    W += loader_process.workloads(paths, py_entry, Workload, block_of)
    W += image_folder.workloads(image_folder.folder_name(args.cache, args.scale), py_entry, Workload, Entry, can_drop)
    W += writer_bench.workloads(args.cache, py_entry, Workload, Entry)
    W += budgets.workloads(paths, py_entry, Workload, block_of)
    return W


W8_REF = "BatchStream window, gzip"


def w8_entries(paths):
    import h5py

    with h5py.File(paths["w8c"], "r") as f:
        n, offset, label_offset = f["images"].shape[0], f["images"].id.get_offset(), f["labels"].id.get_offset()
    gz = dict(file=paths["w8"], batch=256, n_rows=n, func="shuffled-epoch")
    flat = dict(gz, file=paths["w8c"])
    ml = ["torch", "numpy", "multiload"]
    h5 = ["torch", "numpy", "h5py"]
    return [
        py_entry(W8_REF, dict(gz, feed="batchstream", shuffle="window"), imports=ml, role="multiload",
                 note="default block_rows, window, n_procs, read_ahead"),
        py_entry("Streamer sequential, gzip (images only)", dict(gz, feed="streamer"), imports=ml, role="multiload",
                 note="get_queue('/images', n_procs=2, block_size=256): dataset order, labels not read"),
        py_entry("BatchStream window, contiguous", dict(flat, feed="batchstream", shuffle="window"), imports=ml,
                 role="multiload"),
        py_entry("DataLoader(h5py) shuffle, workers=0, gzip", dict(gz, feed="dataloader", workers=0), imports=h5),
        py_entry("DataLoader(h5py) shuffle, workers=2, gzip", dict(gz, feed="dataloader", workers=2), imports=h5),
        py_entry("numpy.memmap permutation, contiguous", dict(flat, feed="memmap", offset=offset,
                                                              label_offset=label_offset),
                 imports=["torch", "numpy"], role="reference"),
    ]


def _mt_has_torch():
    if not os.path.exists(MT_PY):
        return False
    return subprocess.run([MT_PY, "-c", "import torch"], capture_output=True).returncode == 0


# -------------------------------------------------------------- measuring


def execute(W, reps, can_drop):
    runs = []
    todo = sum(len([e for e in w.entries if e.run]) for w in W) * reps
    done, t_start = 0, time.perf_counter()
    for w in W:
        live = [e for e in w.entries if e.run]
        for rep in range(reps):
            order = live[rep % len(live):] + live[:rep % len(live)]
            for e in order:
                if w.warm:
                    warm(w.path)
                elif can_drop:
                    drop_caches()
                res_frac = resident(w.path)
                load = os.getloadavg()
                t0 = time.perf_counter()
                try:
                    r = e.run()
                except Exception as ex:  # recorded, never hidden
                    r = dict(error=f"{type(ex).__name__}: {ex}")
                wall = time.perf_counter() - t0
                runs.append(dict(workload=w.key, system=e.system, rep=rep, warm=w.warm,
                                 resident_before=res_frac, load=load, wall=wall, result=r))
                done += 1
                el = time.perf_counter() - t_start
                eta = el / done * (todo - done)
                print(f"[{done:4d}/{todo}] {w.key:<24} {e.system:<34} rep {rep + 1}/{reps}: "
                      f"{_short(r, w.unit):>16}  load {load[0]:.2f}  eta {eta:4.0f} s", flush=True)
    return runs


def _short(r, unit):
    if "error" in r:
        return "ERROR " + r["error"][:40]
    if "missing" in r:
        return "n/a"
    if unit == "us/block":
        return f"{r['seconds'] / max(1, r['rows']) * 1e6:.2f} us/block"
    if unit == "rows/s":
        return f"{r['rows'] / r['seconds']:,.0f} rows/s"
    return f"{r['bytes'] / r['seconds'] / 1e9:.2f} GB/s"


# -------------------------------------------------------------- summarising


def summarise(W, runs):
    S = {}
    for w in W:
        for e in w.entries:
            rs = [x for x in runs if x["workload"] == w.key and x["system"] == e.system]
            ok = [x["result"] for x in rs if "error" not in x["result"] and "missing" not in x["result"]]
            s = dict(workload=w.key, system=e.system, role=e.role, kind=e.kind, note=e.note, n=len(ok))
            if e.missing:
                s["missing"] = e.missing
            elif not ok:
                errs = [x["result"].get("error") or x["result"].get("missing") for x in rs]
                s["missing"] = "failed: " + (errs[0] if errs else "not run")
            else:
                gbs = [r["bytes"] / r["seconds"] / 1e9 for r in ok]
                rps = [r["rows"] / r["seconds"] for r in ok]
                us = [r["seconds"] / max(1, r["rows"]) * 1e6 for r in ok]
                s.update(gbs=_mmm(gbs), rps=_mmm(rps), us_per_row=_mmm(us))
                for k in ("first", "p50", "p99", "wait_fraction"):
                    v = [r[k] for r in ok if r.get(k) is not None]
                    if v:
                        s[k] = statistics.median(v)
                cpu = [r["cpu"] / (r["bytes"] / 1e9) for r in ok if r.get("cpu") is not None and r["bytes"]]
                if cpu and e.kind == "python":
                    s["cpu_s_per_gb"] = statistics.median(cpu)
                rss = [r["rss_mib"] for r in ok if r.get("rss_mib")]
                if rss:
                    s["rss_mib"] = max(rss)
                grow = [r["rss_growth_mib"] for r in ok if r.get("rss_growth_mib") is not None]
                if grow:
                    s["rss_growth_mib"] = max(grow)
                bound = [r["memory_bound_mib"] for r in ok if r.get("memory_bound_mib")]
                if bound:
                    s["memory_bound_mib"] = max(bound)
                cores = [r["cpu"] / r["seconds"] for r in ok if r.get("cpu") is not None and r["seconds"] > 0]
                if cores and e.kind == "python":
                    s["cpu_cores"] = statistics.median(cores)
                child = [r.get("rss_children_mib", 0) for r in ok]
                if child and max(child) > 0:
                    s["rss_child_mib"] = max(child)
                s["load"] = statistics.median(x["load"][0] for x in rs)
                res = [x["resident_before"] for x in rs if x["resident_before"] is not None]
                if res:
                    s["resident"] = min(res) if w.warm else max(res)
            S[(w.key, e.system)] = s
    return S


def _mmm(v):
    return dict(median=statistics.median(v), min=min(v), max=max(v))


def metric(s, unit):
    if "missing" in s:
        return None
    if unit == "GB/s":
        return s["gbs"]
    if unit == "rows/s":
        return s["rps"]
    return s["us_per_row"]


def ratio(S, wk, a, b, unit):
    """Median of a ÷ median of b (for us/block: b ÷ a, so > 1 means a is faster)."""
    sa, sb = S.get((wk, a)), S.get((wk, b))
    if not sa or not sb or "missing" in sa or "missing" in sb:
        return None
    ma, mb = metric(sa, unit)["median"], metric(sb, unit)["median"]
    return mb / ma if unit == "us/block" else ma / mb


MEMORY_BOUND = "memory bound"  # a target's `versus`: the system's peak RSS growth ÷ its stated bound
SAME_AT = "itself at "
CPU_OF = "cpu of "  # a target's `versus` prefix: CPU s/GB of a ÷ that of the named system (<= goal: less)  # a target's `versus` prefix: the same system's µs per row (chunk) in another workload

# W1-cold: the peers and the fio configurations a headline target compares
# with the best of (a tuple as a target's `versus`: the fastest median of
# them in this run).
W1_COLD_PEERS = ("h5py dset[i:i+B]", "PyTables read()", "numpy.memmap copy", "multitables n_procs=2")
W1_COLD_FIO_RUNS = (
    ("fio psync 1 job, buffered", dict(engine="psync")),
    ("fio io_uring 1 job, buffered", dict()),
    ("fio psync 2 jobs, buffered", dict(engine="psync", jobs=2)),
    ("fio io_uring 2 jobs, buffered", dict(jobs=2)),
    ("fio io_uring 1 job, O_DIRECT", dict(direct=True)),
    ("fio io_uring 2 jobs, O_DIRECT", dict(jobs=2, direct=True)),
    ("fio io_uring 1 job, O_DIRECT, iodepth 32", dict(direct=True, iodepth=32)),
    ("fio io_uring 1 job, O_DIRECT, iodepth 64", dict(direct=True, iodepth=64)),
)
W1_COLD_FIO = tuple(name for name, _ in W1_COLD_FIO_RUNS)
TARGETS = [
    ("W13 compressed writes ≥ 4× h5py", "W13 gzip", writer_bench.MULTILOAD, writer_bench.H5PY, ">=", 4.0),
    ("W13 uncompressed writes ≥ 0.9× fio", "W13 raw", writer_bench.MULTILOAD, writer_bench.FIO, ">=", 0.9),
    # (label, workload, multiload system, other system, op, target, unit)
    ("W1 ≥ 0.85× fio warm, 2 jobs", "W1", "multiload n_procs=2", "fio io_uring 2 jobs", ">=", 0.85),
    ("W1 ≥ 0.85× fio warm, 1 job", "W1", "multiload n_procs=1", "fio io_uring 1 job", ">=", 0.85),
    ("W1 vs fio psync, 2 jobs (reference: psync is the faster fio engine here)", "W1",
     "multiload n_procs=2", "fio psync 2 jobs", ">=", 0.85),
    ("W1 vs memcpy past L3, 2 threads (reference: the copy limit)", "W1", "multiload n_procs=2",
     "memcpy 64 MiB, past L3, 2 threads", ">=", 0.85),
    ("W1 ≥ 1.8× h5py (2 workers)", "W1", "multiload n_procs=2", "h5py dset[i:i+B]", ">=", 1.8),
    ("W1 cold buffered ≥ best peer", "W1-cold", "multiload n_procs=2", W1_COLD_PEERS, ">=", 1.0),
    ("W1 cold buffered ≥ 0.9× best fio", "W1-cold", "multiload n_procs=2", W1_COLD_FIO, ">=", 0.9),
    ("W1 cold direct=True ≥ best peer", "W1-cold", "multiload direct=True", W1_COLD_PEERS, ">=", 1.0),
    ("W1 cold direct=True ≥ 0.9× best fio", "W1-cold", "multiload direct=True", W1_COLD_FIO, ">=", 0.9),
    ("W2 ≥ 0.8× fio, 2 jobs", "W2", "multiload n_procs=2", "fio io_uring 2 jobs", ">=", 0.8),
    ("W2 ≥ 2× h5py (default chunk cache)", "W2", "multiload n_procs=2", "h5py dset[i:i+B]", ">=", 2.0),
    ("W3 ≥ 0.85× libdeflate on all cores", "W3", "multiload n_procs=2", "libdeflate, 2 threads", ">=", 0.85),
    ("W3 ≥ 4.5× h5py", "W3", "multiload n_procs=2", "h5py dset[i:i+B]", ">=", 4.5),
    ("W4 ≥ 3× PyTables", "W4", "multiload n_procs=2", "PyTables read()", ">=", 3.0),
    ("W4 ≥ 5× multitables", "W4", "multiload n_procs=2", "multitables n_procs=2", ">=", 5.0),
    ("W5 ≥ 10× h5py fancy (contiguous, sorted)", "W5 contiguous 256 sorted", "multiload Reader",
     "h5py fancy indexing", ">=", 10.0),
    ("W5 ≥ 10× h5py fancy (contiguous, unsorted)", "W5 contiguous 256 unsorted", "multiload Reader",
     "h5py fancy indexing", ">=", 10.0),
    ("W5 ≥ 10× h5py fancy (deflate, sorted)", "W5 deflate 256 sorted", "multiload Reader",
     "h5py fancy indexing", ">=", 10.0),
    ("W5 ≥ 10× h5py fancy (deflate, unsorted)", "W5 deflate 256 unsorted", "multiload Reader",
     "h5py fancy indexing", ">=", 10.0),
    ("W5 ≥ 10× h5py (contiguous, single rows)", "W5 contiguous single rows", "multiload Reader",
     "h5py fancy indexing", ">=", 10.0),
    ("W5 ≥ 10× h5py (deflate, single rows)", "W5 deflate single rows", "multiload Reader",
     "h5py fancy indexing", ">=", 10.0),
    ("W5 ≥ 1.0× numpy.memmap gather (contiguous, 256 sorted)", "W5 contiguous 256 sorted", "multiload Reader",
     "numpy.memmap gather", ">=", 1.0),
    ("W5 ≥ 1.0× numpy.memmap gather (contiguous, 256 unsorted)", "W5 contiguous 256 unsorted", "multiload Reader",
     "numpy.memmap gather", ">=", 1.0),
    ("W5 ≥ 0.8× numpy.memmap (contiguous, single rows)", "W5 contiguous single rows", "multiload Reader",
     "numpy.memmap gather", ">=", 0.8),
    ("W5 ≥ 20× h5py fancy (contiguous, 256 unsorted)", "W5 contiguous 256 unsorted", "multiload Reader",
     "h5py fancy indexing", ">=", 20.0),
    ("W5 deflate vs h5py with its chunk cache sized to the dataset (reference)", "W5 deflate 256 unsorted",
     "multiload Reader", "h5py fancy, chunk cache = dataset", ">=", 1.0),
    ("W5 ≥ 0.8× fio random 1 KiB reads", "W5 contiguous 256 sorted", "multiload Reader",
     "fio io_uring randread 1 KiB, 2 jobs", ">=", 0.8),
    ("W6 < 10 µs per block", "W6", "multiload n_procs=1", None, "<", 10.0),
    ("W7 ≥ 5× DataLoader(h5py), workers=2", "W7", "multiload queue", "DataLoader(h5py) workers=2", ">=", 5.0),
    ("W7 ≥ 5× DataLoader(h5py), workers=0", "W7", "multiload queue", "DataLoader(h5py) workers=0", ">=", 5.0),
    ("W10 open + stream ≥ 1.0× h5py (fixed array, 25,000 chunks)", "W10 farray", "multiload n_procs=2",
     "h5py dset[i:i+B]", ">=", 1.0),
    ("W10 open + stream ≥ 1.0× h5py (extensible array)", "W10 earray", "multiload n_procs=2",
     "h5py dset[i:i+B]", ">=", 1.0),
    ("W10 open + stream ≥ 1.0× h5py (v2 B-tree)", "W10 btree2", "multiload n_procs=2", "h5py dset[i:i+B]", ">=", 1.0),
    ("W10 open cost linear: µs per chunk at 10^6 chunks ≤ 2× at 10^3", "W10 open 1e+06", "multiload open",
     SAME_AT + "W10 open 1e+03", "<=", 2.0),
    ("W8 window shuffle ≥ 0.9× sequential Streamer (gzip file)", "W8", W8_REF,
     "Streamer sequential, gzip (images only)", ">=", 0.9),
    ("W8 ≥ 10× DataLoader(h5py) shuffle=True, workers=2", "W8", W8_REF, "DataLoader(h5py) shuffle, workers=2, gzip",
     ">=", 10.0),
    ("W8 ≥ 10× DataLoader(h5py) shuffle=True, workers=0", "W8", W8_REF, "DataLoader(h5py) shuffle, workers=0, gzip",
     ">=", 10.0),
    ("W8 BatchStream peak RSS growth within stats()['memory_bound'] (gzip)", "W8", W8_REF, MEMORY_BOUND, "<=", 1.0),
    ("W8 BatchStream peak RSS growth within stats()['memory_bound'] (contiguous)", "W8",
     "BatchStream window, contiguous", MEMORY_BOUND, "<=", 1.0),
] + scaleout.TARGETS + loader_process.TARGETS + image_folder.TARGETS + budgets.TARGETS


def best_of(S, wk, systems, unit):
    """The system of `systems` with the best median in workload wk (None if none was measured)."""
    got = [(metric(S[(wk, b)], unit)["median"], b) for b in systems
           if (wk, b) in S and "missing" not in S[(wk, b)]]
    if not got:
        return None
    return (min if unit == "us/block" else max)(got)[1]


def targets(W, S):
    units = {w.key: w.unit for w in W}
    out = []
    for label, wk, a, b, op, target in TARGETS:
        unit = units.get(wk)
        best = None
        if isinstance(b, tuple):  # the best of several systems, as measured in this run
            best = best_of(S, wk, b, unit) if unit else None
            b = best or b[0]
        row = dict(target=label, workload=wk, multiload=a, versus=b, op=op, goal=target)
        sa = S.get((wk, a))
        if unit is None or sa is None:
            row.update(value=None, status="not measured", why=f"workload {wk} was not run")
        elif b == MEMORY_BOUND:
            v = (sa["rss_growth_mib"] / sa["memory_bound_mib"]
                 if "rss_growth_mib" in sa and sa.get("memory_bound_mib") else None)
            row.update(value=v, status="not available" if v is None else ("met" if v <= target else "missed"),
                       why=sa.get("missing", "") or (f"peak RSS grew {sa['rss_growth_mib']:.0f} MiB, bound "
                                                     f"{sa['memory_bound_mib']:.0f} MiB" if v is not None else ""))
        elif isinstance(b, str) and b.startswith(SAME_AT):
            sb = S.get((b[len(SAME_AT):], a))
            v = (sa["us_per_row"]["median"] / sb["us_per_row"]["median"]
                 if sb and "missing" not in sa and "missing" not in sb else None)
            row.update(value=v, status="not available" if v is None else ("met" if v <= target else "missed"),
                       why=sa.get("missing", "") or (sb or {}).get("missing", ""))
        elif isinstance(b, str) and b.startswith(CPU_OF):
            sb = S.get((wk, b[len(CPU_OF):]), {})
            v = (sa["cpu_s_per_gb"] / sb["cpu_s_per_gb"]
                 if sa.get("cpu_s_per_gb") and sb.get("cpu_s_per_gb") else None)
            row.update(value=v, status="not available" if v is None else ("met" if v <= target else "missed"),
                       why=sa.get("missing", "") or sb.get("missing", "") or (
                           f"{sa['cpu_s_per_gb']:.2f} vs {sb['cpu_s_per_gb']:.2f} CPU s/GB" if v is not None else ""))
        elif b is None:
            v = None if "missing" in sa else sa["us_per_row"]["median"]
            row.update(value=v, status="not available" if v is None else ("met" if v < target else "missed"),
                       why=sa.get("missing", ""))
        else:
            v = ratio(S, wk, a, b, unit)
            sb = S.get((wk, b), {})
            why = sa.get("missing") or sb.get("missing") or ""
            if best and not why:
                why = f"best: {best}, {fmt_num(metric(sb, unit)['median'], unit)} {unit}"
            met = v is not None and (v <= target if op == "<=" else v >= target)  # "<=": an upper bound (W14)
            row.update(value=v, status="not available" if v is None else ("met" if met else "missed"),
                       why=why)
        out.append(row)
    return out


# ------------------------------------------------------------------ report


def fmt_num(v, unit):
    if unit == "GB/s":
        return f"{v:.2f}"
    if unit == "us/block":
        return f"{v:.2f}"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def fmt_time(v):
    if v is None:
        return "–"
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    if v < 1:
        return f"{v * 1e3:.1f} ms"
    return f"{v:.2f} s"


def table(w, S):
    unit = w.unit
    head = {"GB/s": "GB/s median [min–max]", "rows/s": "rows/s median [min–max]",
            "us/block": "µs/block median [min–max]"}[unit]
    lines = [f"| system | {head} | {'GB/s' if unit != 'GB/s' else 'rows/s'} | multiload ÷ this | "
             "first block | p50 / p99 per block | CPU s/GB | peak RSS MiB | warm | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in w.entries:
        s = S.get((w.key, e.system)) or dict(missing="not in the published run (--merge)")
        name = e.system + (" *(limit)*" if e.role == "limit" else "")
        if "missing" in s:
            lines.append(f"| {name} | not available: {s['missing']} | | | | | | | | |")
            continue
        m = metric(s, unit)
        other = (f"{s['gbs']['median']:.2f}" if unit != "GB/s" else fmt_num(s["rps"]["median"], "rows/s"))
        r = ratio(S, w.key, w.ref, e.system, unit) if e.system != w.ref else None
        rs = f"{r:.2f}×" if r is not None else ("–" if e.system == w.ref else "n/a")
        warm_s = "–" if s.get("resident") is None else f"{s['resident'] * 100:.0f}%"
        cpu = f"{s['cpu_s_per_gb']:.2f}" if "cpu_s_per_gb" in s else "–"
        if "wait_fraction" in s and "cpu_cores" in s:  # a training loop: how much of the machine the feed took
            cpu += f" ({s['cpu_cores']:.2f} cores)"
        rss = f"{s['rss_mib']:.0f}" if "rss_mib" in s else "–"
        if "rss_child_mib" in s:
            rss += f" (+{s['rss_child_mib']:.0f} / child)"
        if "rss_growth_mib" in s:
            rss += f"; grew {s['rss_growth_mib']:.0f}"
            if "memory_bound_mib" in s:
                rss += f" (bound {s['memory_bound_mib']:.0f})"
        lat = f"{fmt_time(s.get('p50'))} / {fmt_time(s.get('p99'))}" if s.get("p50") else "–"
        wait = f" (waits {s['wait_fraction'] * 100:.0f}%)" if "wait_fraction" in s else ""
        lines.append(f"| {name} | **{fmt_num(m['median'], unit)}** [{fmt_num(m['min'], unit)}–"
                     f"{fmt_num(m['max'], unit)}]{wait} | {other} | {rs} | {fmt_time(s.get('first'))} | "
                     f"{lat} | {cpu} | {rss} | {warm_s} | {s['load']:.2f} |")
    return "\n".join(lines)


def target_table(T):
    lines = ["| target | measured | goal | status |", "|---|---|---|---|"]
    for t in T:
        if t["value"] is None:
            v = "–"
        elif t["versus"] is None:
            v = f"{t['value']:.2f} µs"
        elif t["versus"] == MEMORY_BOUND:
            v = f"{t['value']:.2f}× the bound"
        else:
            v = f"{t['value']:.2f}×"
        goal = f"{t['op']} {t['goal']}{' µs' if t['versus'] is None else '×'}"
        status = {"met": "**met**", "missed": "**missed**"}.get(t["status"], t["status"])
        if t["why"]:
            status += f" ({t['why']})"
        lines.append(f"| {t['target']} | {v} | {goal} | {status} |")
    return "\n".join(lines)


def chart_name(w):
    return "bench-" + w.key.lower().replace(" ", "-") + ".png"


def charts(W, S, outdir):
    """One PNG per workload: bars (median, min-max whiskers) for the systems,
    limits drawn as dashed horizontal lines. Returns {workload: file name}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    out = {}
    for w in W:
        panels = [("GB/s", "GB/s"), ("rows/s", "rows/s")] if w.unit != "us/block" else [("µs per block", "us/block")]
        n_lims = sum(1 for e in w.entries if e.role == "limit")
        fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 4.2 + 0.2 * ((n_lims + 1) // 2)),
                                 squeeze=False)
        for ax, (label, unit) in zip(axes[0], panels):
            bars, lims = [], []
            for e in w.entries:
                s = S.get((w.key, e.system)) or dict(missing="not in the published run (--merge)")
                if "missing" in s:
                    continue
                m = {"GB/s": s["gbs"], "rows/s": s["rps"], "us/block": s["us_per_row"]}[unit]
                (lims if e.role == "limit" else bars).append((e, m))
            names = [e.system for e, _ in bars]
            med = [m["median"] for _, m in bars]
            err = np.array([[m["median"] - m["min"] for _, m in bars], [m["max"] - m["median"] for _, m in bars]])
            colors = ["#d62728" if e.role == "multiload" else "#7f7f7f" if e.role == "reference" else "#1f77b4"
                      for e, _ in bars]
            if bars:
                ax.barh(range(len(bars)), med, xerr=err, color=colors, capsize=3)
                ax.set_yticks(range(len(bars)))
                ax.set_yticklabels(names, fontsize=8)
                ax.invert_yaxis()
            styles = ["--", ":", "-.", (0, (5, 1))]
            palette = ["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#000000"]
            for i, (e, m) in enumerate(lims):
                ax.axvline(m["median"], color=palette[i % len(palette)], linestyle=styles[i % len(styles)],
                           linewidth=1.4, label=f"{e.system}: {fmt_num(m['median'], unit)}")
            if lims:
                ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False,
                          title="limits (lines)", title_fontsize=7)
            vals = [v for v in med + [m["median"] for _, m in lims] if v > 0]
            log = bool(vals) and max(vals) / min(vals) > 200
            if log:
                ax.set_xscale("log")
            ax.set_xlabel(label + (" (log scale)" if log else ""))
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(f"{w.key}: {w.title}", fontsize=10)
        fig.tight_layout()
        name = chart_name(w)
        fig.savefig(os.path.join(outdir, name), dpi=90)
        plt.close(fig)
        out[w.key] = name
    return out


def cpu_seconds():
    """(all cores' busy CPU seconds from /proc/stat, this process tree's CPU seconds, wall time)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = None
    me = os.times()
    ours = me.user + me.system + me.children_user + me.children_system
    return busy, ours, time.monotonic()


def other_cpu_share(a, b):
    """Share of the machine's CPU (0..1) that processes other than the benchmark used while it ran."""
    if a[0] is None or b[0] is None or b[2] <= a[2]:
        return None
    other = (b[0] - a[0]) - (b[1] - a[1])
    return max(0.0, other / ((b[2] - a[2]) * (os.cpu_count() or 1)))


def markdown(meta, W, S, T, pngs, notes):
    m = meta["machine"]
    v = meta["versions"]
    merged = {k for mg in meta.get("merged", ()) for k in mg["workloads"]}
    loads = [r["load"][0] for r in meta["_runs"] if r["workload"] not in merged]
    hi = max(loads) if loads else 0
    load_note = (f"Load average (1 min) over the runs: median {statistics.median(loads):.2f}, "
                 f"max {hi:.2f} on {m.get('cores')} cores (the benchmark's own processes count in it)."
                 if loads else "")
    other = meta.get("other_cpu_share")
    if other is not None:
        load_note += f" Other processes used {100 * other:.0f} % of the machine's CPU while it ran."
        if other > 0.15:
            load_note += (" **These numbers were taken on a busy machine**: ratios between systems are "
                          "fairer than absolute numbers, since runs were interleaved.")
    out = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py` — do not edit by hand; the notes come from "
        "`benchmarks/notes.md`.",
        "",
        "## How to run",
        "",
        "```",
        "make bench          # quick: smaller files, 5 runs each, about 5 minutes on 2 cores",
        "make bench FULL=1   # larger files (W1 2 GiB), 7 runs each",
        "```",
        "",
        "`make bench` installs what it needs first (`make bench-deps`: fio from Debian, matplotlib "
        "and torch (CPU) into `.venv`, multitables 2.0.1 with numpy<2 into `.venv-multitables`), "
        "writes the files once into the cache folder (`CACHE=`, default `~/.cache/multiload`), "
        "then runs every system in its own process, interleaved, and writes "
        "`benchmarks/results/<time>.json`, `docs/benchmarks.json`, this file and `docs/bench-*.png`. "
        "`python benchmarks/run.py --only W1,W6 --reps 3` runs a subset.",
        "",
        "## This run",
        "",
        f"- mode: **{meta['mode']}**, {meta['reps']} runs per system, started {meta['started']}, "
        f"took {meta['duration_s']:.0f} s",
        f"- machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('mem_gib')} GiB, "
        f"L2 {m.get('L2 cache', '?')}, L3 {m.get('L3 cache', '?')}, Linux {m.get('kernel')}",
        f"- multiload {v.get('multiload')} (I/O: {v.get('multiload_io')}), h5py {v.get('h5py')} "
        f"(HDF5 {v.get('hdf5')}), PyTables {v.get('tables')}, numpy {v.get('numpy')}, "
        f"torch {v.get('torch')}, {v.get('fio')}, multitables: "
        f"{_mt_version(v)}",
        f"- files: " + ", ".join(f"{k.upper()} {os.path.getsize(p) / MIB:.0f} MiB on disk"
                                 for k, p in meta["files"].items()),
        f"- cold runs: {meta['drop_caches']}",
        f"- {load_note}",
    ]
    for mg in meta.get("merged", ()):
        out.append(f"- **{', '.join(mg['workloads'])} measured in a later run** (`--merge`): started {mg['started']}, "
                   f"{mg['reps']} runs per system, took {mg['duration_s']:.0f} s, load average (1 min) median "
                   f"{mg['load_median']:.2f}, max {mg['load_max']:.2f}"
                   + (f", other processes used {100 * mg['other_cpu_share']:.0f} % of the CPU"
                      if mg.get("other_cpu_share") is not None else "")
                   + "; the other workloads' figures are the first run's")
    out += [
        "",
        "Each figure is the median of the runs, [min–max] beside it. *multiload ÷ this* is the "
        "reference multiload configuration of the workload divided by the row's system (for µs/block "
        "the other way round: > 1 means multiload is faster). *warm* is the fraction of the file "
        "in the page cache right before the run (lowest over the runs; for cold runs the highest). "
        "CPU s/GB counts all threads and child processes of the system's process; peak RSS is "
        "the process's own VmHWM, with its largest worker process's beside it (workers share "
        "pages with the parent they forked from, so the two do not add up). Limits (fio, memcpy, libdeflate) are drawn as lines in the charts.",
        "",
        "## Targets (issue 5; W8: issue 11)",
        "",
        target_table(T),
        "",
    ]
    for w in W:
        out += [f"## {w.key}: {w.title}", "", table(w, S), ""]
        if w.key in pngs:
            out += [f"![{w.key}]({pngs[w.key]})", ""]
    out += [notes]
    return "\n".join(out) + "\n"


def merge_into_docs(W_all, W_new, new_runs, new_meta):
    """The published runs (docs/benchmarks.json) of every workload not measured
    now, plus this run's: (W, S, T, runs, meta, doc) for the report. The
    published meta and summaries stay (machine, first run's load, figures);
    this run is listed in meta['merged'] with its own time, reps and load."""
    old = json.load(open(os.path.join(DOCS, "benchmarks.json")))
    if old["meta"]["mode"] != new_meta["mode"]:
        sys.exit(f"--merge: docs/benchmarks.json is a {old['meta']['mode']} run, this is {new_meta['mode']}")
    keys = {w.key for w in W_new}
    runs = [r for r in old["runs"] if r["workload"] not in keys] + new_runs
    meta = old["meta"]
    meta["files"] = dict(meta["files"], **new_meta["files"])
    loads = [r["load"][0] for r in new_runs]
    meta["merged"] = [m for m in meta.get("merged", []) if not set(m["workloads"]) & keys] + [dict(
        workloads=sorted(keys), started=new_meta["started"], reps=new_meta["reps"],
        duration_s=new_meta["duration_s"], other_cpu_share=new_meta["other_cpu_share"],
        load_median=statistics.median(loads), load_max=max(loads), versions=new_meta["versions"])]
    have = {r["workload"] for r in runs}
    W = [w for w in W_all if w.key in have]
    # the kept workloads' published summaries as they are (this checkout may lack a peer they had)
    S = {(s["workload"], s["system"]): s for s in old["summary"] if s["workload"] not in keys}
    S.update(summarise(W_new, new_runs))
    T = targets(W, S)
    return W, S, T, runs, meta, dict(meta=meta, runs=runs, summary=[dict(s) for s in S.values()], targets=T)


def _mt_version(v):
    mt = v.get("multitables_venv")
    if isinstance(mt, dict):
        return f"{mt['multitables']} (numpy {mt['numpy']}, PyTables {mt['tables']}, own venv)"
    return "not available"


# -------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/multiload"))
    ap.add_argument("--full", action="store_true", help="larger files, more runs")
    ap.add_argument("--reps", type=int, default=None, help="runs per system (default 5, FULL 7)")
    ap.add_argument("--only", default="", help="comma-separated workload prefixes, e.g. W1,W5")
    ap.add_argument("--scale", type=float, default=1.0, help="file size factor (development)")
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/")
    ap.add_argument("--merge", action="store_true",
                    help="with --only (or --from a results JSON): keep the other workloads' published runs and "
                         "summaries from docs/benchmarks.json and write docs with both (the new workloads' run "
                         "is recorded as a later run)")
    ap.add_argument("--from", dest="from_json", default=None,
                    help="no measuring: rebuild the report and charts from a results JSON")
    args = ap.parse_args()
    reps = args.reps or (7 if args.full else 5)
    t_start = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    print(">> checking tools", flush=True)
    have_mt, mt_reason = multitables_status()
    if not have_mt:
        print(f"   multitables: not available: {mt_reason}")
    if not shutil.which("fio"):
        sys.exit("fio is missing: run `make bench-deps` (apt-get install fio)")
    can_drop, drop_reason = drop_caches_possible()
    print(f"   cold runs: {'yes' if can_drop else 'no'} ({drop_reason})")
    exe = build_limits(args.cache)

    print(f">> files in {args.cache} ({'full' if args.full else 'quick'})", flush=True)
    paths = files.ensure(args.cache, args.full, args.scale)

    W = W_all = plan(args, paths, exe, have_mt, mt_reason, can_drop)
    if args.merge and not (args.only or args.from_json):
        sys.exit("--merge needs --only (the workloads to measure anew) or --from (a results JSON of them)")
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        W = [w for w in W if any(w.key.startswith(k) for k in keys)]
    if any(w.key.startswith("W11") for w in W) and not args.from_json:
        image_folder.ensure(args.cache, args.scale)  # the image folder, written once
    if args.from_json:
        old = json.load(open(args.from_json))
        runs, meta = old["runs"], old["meta"]
        have = {r["workload"] for r in runs}
        W = [w for w in W if w.key in have]
        S = summarise(W, runs)
        T = targets(W, S)
        doc = dict(meta=meta, runs=runs, summary=[dict(s) for s in S.values()], targets=T)
        res_path = args.from_json
        if args.merge:
            W, S, T, runs, meta, doc = merge_into_docs(W_all, W, runs, meta)
    else:
        n_runs = sum(len([e for e in w.entries if e.run]) for w in W) * reps
        print(f">> {len(W)} workloads, {n_runs} runs ({reps} per system), load now "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        cpu0 = cpu_seconds()
        runs = execute(W, reps, can_drop)
        cpu1 = cpu_seconds()
        S = summarise(W, runs)
        T = targets(W, S)

        meta = dict(mode="full" if args.full else "quick", reps=reps, started=started,
                    duration_s=time.perf_counter() - t_start, machine=machine(), versions=versions(have_mt),
                    files=paths, scale=args.scale,
                    drop_caches=drop_reason if can_drop else f"not possible: {drop_reason}",
                    multitables=("available" if have_mt else f"not available: {mt_reason}"),
                    child_env="OPENBLAS_NUM_THREADS=1",
                    other_cpu_share=other_cpu_share(cpu0, cpu1))
        doc = dict(meta=meta, runs=runs,
                   summary=[dict(s) for s in S.values()], targets=T)
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        res_path = os.path.join(HERE, "results", f"{stamp}.json")
        with open(res_path, "w") as f:
            json.dump(doc, f, indent=1)
        if args.merge:
            W, S, T, runs, meta, doc = merge_into_docs(W_all, W, runs, meta)

    notes_path = os.path.join(HERE, "notes.md")
    notes = open(notes_path).read() if os.path.exists(notes_path) else ""
    meta["_runs"] = runs
    md = markdown(meta, W, S, T, {}, "")
    del meta["_runs"]
    print()
    print(md)
    if not args.no_docs:
        os.makedirs(DOCS, exist_ok=True)
        fresh = {k for mg in meta.get("merged", ()) for k in mg["workloads"]} if args.merge else None
        pngs = charts([w for w in W if fresh is None or w.key in fresh], S, DOCS)
        if fresh is not None:  # the kept workloads' published charts stay as they are
            for w in W:
                name = chart_name(w)
                if w.key not in pngs and os.path.exists(os.path.join(DOCS, name)):
                    pngs[w.key] = name
        meta["_runs"] = runs
        md = markdown(meta, W, S, T, pngs, notes)
        del meta["_runs"]
        with open(os.path.join(DOCS, "benchmarks.md"), "w") as f:
            f.write(md)
        with open(os.path.join(DOCS, "benchmarks.json"), "w") as f:
            json.dump(doc, f, indent=1)
        print(f">> wrote docs/benchmarks.md, docs/benchmarks.json, {len(pngs)} charts in docs/")
    print(f">> every run: {res_path}")


if __name__ == "__main__":
    main()
