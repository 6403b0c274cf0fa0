"""W11 (issue 15): an image folder read whole, file by file, warm and cold.

20,000 files of 16-256 KiB (uniform, in 4 KiB steps: fio, the limit, reads
a file only in whole blocks of its block-size range, so sizes it can read
to the byte keep the comparison exact), split over two subfolders so fio's
two jobs each take one (fio's ``opendir``; a list of 20,000 names does not
fit in one argument). Every system reads every file once, whole, in the
folder's order, and touches nothing after the read (each ends with the
bytes in memory it owns or views):

- ``multiload.FileLoader``: loader threads in the process (and, in a
  second row, in a spawned loader process), one worker context, the
  consumer requesting with back-pressure and releasing each entry after
  taking its zero-copy view; a third row calls ``get_data()`` (a copy into
  bytes, what AsyncLoader's ``get_data`` returns);
- a ``ThreadPoolExecutor`` (default size) mapping ``open().read()``;
- a plain loop of ``open().read()``;
- torch's ``DataLoader`` with 2 workers whose dataset returns a file's
  bytes (``batch_size=None``: one file per item, sent back through the
  workers' result queues; returning a uint8 tensor instead, moved through
  shared memory, measured no faster);
- fio, 2 jobs, one per subfolder, io_uring (iodepth 16) and psync, block
  sizes 4-256 KiB: the limit. Cold runs add O_DIRECT rows on both sides.

run.py runs the Python systems as ``python benchmarks/image_folder.py
'<spec json>'`` (one process per run) and reads the ``@@RESULT`` line;
``workloads()`` is W11's part of its plan, ``ensure()`` writes the folder.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

VERSION = 1
N_FILES = 20000
MIN_KIB, MAX_KIB, STEP_KIB = 16, 256, 4
MAX_BYTES = MAX_KIB << 10
QUEUE_DEPTH = 64  # FileLoader entries: 16 MiB of slots
HERE = os.path.abspath(__file__)
REF = "multiload FileLoader"

FIO_WARM = ("fio io_uring 2 jobs", "fio psync 2 jobs")
FIO_COLD = FIO_WARM + ("fio io_uring 2 jobs, O_DIRECT",)

TARGETS = [
    ("W11 FileLoader ≥ 0.8× fio (warm, best of io_uring/psync)", "W11", REF, FIO_WARM, ">=", 0.8),
    ("W11 FileLoader ≥ 3× ThreadPoolExecutor open().read() (warm)", "W11", REF, "ThreadPoolExecutor open().read()",
     ">=", 3.0),
    ("W11 cold FileLoader ≥ 0.8× fio (best of buffered and O_DIRECT)", "W11-cold", REF, FIO_COLD, ">=", 0.8),
    ("W11 cold FileLoader ≥ 3× ThreadPoolExecutor open().read()", "W11-cold", REF,
     "ThreadPoolExecutor open().read()", ">=", 3.0),
]


# ------------------------------------------------------------------ files


def folder_name(cache, scale=1.0):
    """Where the folder of N_FILES * scale files lives (written by ensure)."""
    return os.path.join(cache, f"w11-v{VERSION}-images-{max(100, int(N_FILES * scale))}")


def ensure(cache, scale=1.0):
    """The image folder in the cache (written once, ~2.7 GB): its path."""
    import numpy as np

    n = max(100, int(N_FILES * scale))
    d = folder_name(cache, scale)
    if os.path.exists(os.path.join(d, ".complete")):
        return d
    rng = np.random.default_rng(11)
    steps = (MAX_KIB - MIN_KIB) // STEP_KIB + 1
    sizes = (MIN_KIB + STEP_KIB * rng.integers(0, steps, n)) << 10
    for sub in ("0", "1"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    t0 = time.time()
    for i, size in enumerate(sizes):
        p = os.path.join(d, str(i % 2), f"{i:05d}.jpg")
        with open(p + ".tmp", "wb") as f:
            f.write(rng.integers(0, 256, int(size), dtype=np.uint8).tobytes())
        os.replace(p + ".tmp", p)
        if i % 2000 == 1999:
            print(f"   W11 folder: {i + 1}/{n} files ({time.time() - t0:.0f} s)", flush=True)
    with open(os.path.join(d, ".complete"), "w") as f:
        f.write(f"{n} files, {int(sizes.sum())} bytes\n")
    return d


def file_list(folder):
    """Every file of the folder, in the order it was written (alternating subfolders)."""
    names = []
    for sub in ("0", "1"):
        names += [os.path.join(folder, sub, n) for n in os.listdir(os.path.join(folder, sub)) if n.endswith(".jpg")]
    return sorted(names, key=os.path.basename)


# --------------------------------------------------------------- run.py plan


def fio_entry(Entry, system, folder, engine="io_uring", direct=False, cold=False):
    def run():
        job = (f"[global]\nrw=read\nbsrange=4k-{MAX_KIB}k\nioengine={engine}\ndirect={int(direct)}\n"
               f"invalidate={int(cold)}\nfile_service_type=sequential\nopenfiles=16\nthread\ngroup_reporting\n"
               + ("iodepth=16\n" if engine != "psync" else "")
               + "".join(f"[j{s}]\nopendir={os.path.join(folder, s)}\n" for s in ("0", "1")))
        with tempfile.NamedTemporaryFile("w", suffix=".fio") as jf:
            jf.write(job)
            jf.flush()
            p = subprocess.run(["fio", "--output-format=json", jf.name], capture_output=True, text=True, timeout=600)
        if p.returncode:
            return dict(error=(p.stderr.strip().splitlines() or ["fio failed"])[-1])
        out = json.loads(p.stdout[p.stdout.index("{"):])
        job0 = out["jobs"][0]
        rd = job0["read"]
        secs = rd["runtime"] / 1000
        return dict(bytes=rd["io_bytes"], rows=len(file_list(folder)), ios=rd["total_ios"], seconds=secs,
                    cpu=(job0["usr_cpu"] + job0["sys_cpu"]) / 100 * secs * 2)
    return Entry(system, "fio", run, role="limit",
                 note=f"fio {engine}, 2 jobs (a subfolder each), bsrange 4-{MAX_KIB} KiB, "
                      f"{'iodepth 16, ' if engine != 'psync' else ''}files read one after another"
                      f"{', O_DIRECT' if direct else ''}")


def workloads(folder, py_entry, Workload, Entry, can_drop):
    """W11 (and W11-cold where the page cache can be dropped) for run.py's plan."""
    ml = ["multiload", "numpy"]
    base = dict(folder=folder)
    out = []
    for cold in (False, True):
        if cold and not can_drop:
            continue
        e = [py_entry(REF, dict(base, func="fileloader"), imports=ml, role="multiload", script=HERE,
                      note=f"start(): 2 loader threads, queue_depth {QUEUE_DEPTH}, zero-copy view, release"),
             py_entry("multiload FileLoader, loader process", dict(base, func="fileloader", spawn=True), imports=ml,
                      role="multiload", script=HERE, note="spawn_loader(): the threads in a loader process"),
             py_entry("multiload FileLoader, get_data()", dict(base, func="fileloader", copy=True), imports=ml,
                      role="multiload", script=HERE, note="each file copied into bytes, as AsyncLoader returns it")]
        if cold:
            e += [py_entry("multiload FileLoader, 8 threads", dict(base, func="fileloader", n_threads=8),
                           imports=ml, role="multiload", script=HERE,
                           note="more opens and reads in flight for the disk"),
                  py_entry("multiload FileLoader, direct=True", dict(base, func="fileloader", direct=True),
                           imports=ml, role="multiload", script=HERE, note="O_DIRECT")]
        e += [py_entry("ThreadPoolExecutor open().read()", dict(base, func="threadpool"), script=HERE),
              py_entry("plain loop open().read()", dict(base, func="loop"), script=HERE),
              py_entry("torch DataLoader, 2 workers", dict(base, func="dataloader"), imports=["torch"], script=HERE,
                       note="Dataset returns open().read(), batch_size=None")]
        e += [fio_entry(Entry, FIO_WARM[0], folder, cold=cold), fio_entry(Entry, FIO_WARM[1], folder, "psync", cold=cold)]
        if cold:
            e.append(fio_entry(Entry, FIO_COLD[2], folder, direct=True, cold=cold))
        key = "W11-cold" if cold else "W11"
        title = (f"image folder: {N_FILES:,} files of {MIN_KIB}-{MAX_KIB} KiB read whole"
                 + (", page cache dropped before each run" if cold else ", warm"))
        out.append(Workload(key, title, folder, e, warm=not cold, ref=REF))
    return out


# --------------------------------------------------------------- systems


def _read(p):
    with open(p, "rb") as f:
        return f.read()


def run_fileloader(spec, paths):
    import multiload

    loader = multiload.FileLoader(QUEUE_DEPTH, MAX_BYTES, 1, n_threads=spec.get("n_threads", 2),
                                  direct=spec.get("direct", False))
    if spec.get("spawn"):
        loader.spawn_loader()
    else:
        loader.start()
    t0 = time.perf_counter()
    w = loader.get_worker_context(0)
    copy = spec.get("copy", False)
    n, i, pending, nbytes = len(paths), 0, 0, 0
    while i < n or pending:
        while i < n and w.request(paths[i]):
            i += 1
            pending += 1
        e = w.wait_get()
        nbytes += len(e.get_data()) if copy else len(e.view())
        e.release()
        pending -= 1
    secs = time.perf_counter() - t0
    st = loader.stats()
    loader.close()
    if st["failed"]:
        raise RuntimeError(f"{st['failed']} files failed")
    return dict(bytes=nbytes, seconds=secs, io_engine=loader.io_engine, direct_fallbacks=st["direct_fallbacks"])


def run_threadpool(spec, paths):
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    nbytes = 0
    with ThreadPoolExecutor() as ex:
        for b in ex.map(_read, paths, chunksize=64):
            nbytes += len(b)
    return dict(bytes=nbytes, seconds=time.perf_counter() - t0)


def run_loop(spec, paths):
    t0 = time.perf_counter()
    nbytes = 0
    for p in paths:
        nbytes += len(_read(p))
    return dict(bytes=nbytes, seconds=time.perf_counter() - t0)


class _Files:
    """A map-style dataset: item i is file i's bytes."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return _read(self.paths[i])


def run_dataloader(spec, paths):
    import torch

    t0 = time.perf_counter()
    nbytes = 0
    for b in torch.utils.data.DataLoader(_Files(paths), batch_size=None, num_workers=2):
        nbytes += len(b)
    return dict(bytes=nbytes, seconds=time.perf_counter() - t0)


def _vm_hwm_mib():
    """Peak RSS of this process alone (VmHWM; ru_maxrss carries the parent's over exec)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


FUNCS = dict(fileloader=run_fileloader, threadpool=run_threadpool, loop=run_loop, dataloader=run_dataloader)


def main():
    spec = json.loads(sys.argv[1])
    for name in spec.get("imports", ()):  # before the clock: CPU time is the run's alone
        try:
            __import__(name)
        except ImportError:
            pass
    paths = file_list(spec["folder"])
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = FUNCS[spec["func"]](spec, paths)
        out["rows"] = len(paths)
    except Exception as e:  # reported, never hidden
        out = dict(error=f"{type(e).__name__}: {e}")
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu"] = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
                  + c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime)
    out["rss_mib"] = _vm_hwm_mib() or r1.ru_maxrss / 1024
    out["rss_children_mib"] = c1.ru_maxrss / 1024
    sys.stdout.write("\n@@RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
