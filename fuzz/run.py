"""run.py - the end-to-end fuzz campaign: mutate seeds, read each case with
multiload (fuzz_read, ASan + UBSan) and with HDF5 itself (ref_read), and
compare every block of bytes. docs/fuzzing.md explains the oracle.

Each case runs in fresh processes with a time limit: case N of campaign
seed S is always the same file (mutate.py), on seed N mod (number of
seeds), so `run.py --seed S --case N` reproduces any finding. Outcomes:

  exact        every block multiloaded read equals HDF5's
  both-refuse  neither read anything
  ml-refuses   multiload raised where HDF5 read (acceptable, counted)
  hdf5-undefined  HDF5 leaves the bytes multiload disputes unwritten (its
               read changes with what the buffer held before it): any
               answer is HDF5's answer (acceptable, counted)
  hdf5-differs HDF5 1.10.8 refused or differed, h5py (newer HDF5) agrees
               with multiload (acceptable, counted)
  hdf5-crash   the reference crashed or hung; multiload must not
  shared-crash multiload crashed inside HDF5, in a call the reference (and
               so h5py) makes the same way -- opening the dataset
               (H5Fopen/H5Oopen), the slow path's H5Dread, or HDF5 closing
               its files at exit, with no frame of the core -- and the
               reference crashed too: HDF5 1.10.8's own bug, which the
               core would need its own group, object-header or filter
               parsers to avoid. Not ours to fix here, so not a finding for
               the smoke, but counted and reported (docs/fuzzing.md)
  MISMATCH     multiload returned bytes (or a shape) that neither HDF5 nor
               h5py returns                                  [finding]
  CRASH        a sanitizer report or a signal in fuzz_read   [finding]
  HANG         fuzz_read passed its time limit               [finding]
  LEAK         LeakSanitizer: memory allocated by our code not freed
               [finding]
Findings are saved under OUT/findings (the case file, its mutations, the
two outputs, the sanitizer report); the summary table (counts per seed and
outcome) is printed and written to OUT/summary.txt.
"""

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mutate  # noqa: E402

FINDINGS = ("MISMATCH", "CRASH", "HANG", "LEAK")
OUTCOMES = ("exact", "both-refuse", "ml-refuses", "hdf5-undefined", "hdf5-differs", "hdf5-crash",
            "shared-crash") + FINDINGS
#: The core's frames that are plain HDF5 calls the reference makes too.
SHARED_PATHS = ("via ml_h5_dataset_open ", "via ml_layout_read_slow ", "via h5_read_slow ")
ML_TIMEOUT = 20.0   # s: fuzz_read under ASan; its own waits give up after 8 s
REF_TIMEOUT = 10.0  # s: HDF5 1.10.8 spends minutes on some huge claimed dataspaces
ASAN_OPTIONS = ("detect_leaks=1:allocator_may_return_null=1:halt_on_error=1:abort_on_error=0:"
                "handle_abort=1:detect_stack_use_after_return=0:malloc_context_size=20")
UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1"


def unescape(token):
    """plan.h's escaped path back to the string fuzz_read was given."""
    return re.sub(rb"%([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  token.encode("latin-1")).decode("utf-8", "surrogateescape")


def parse(out):
    """{path: {"shape": (rows, rb) | None, "open": msg | None, "blocks": {(tag, k): (row0, n, crc|None, msg)}}}"""
    ds = {}
    for line in out.splitlines():
        parts = line.split(" ")
        if len(parts) < 3 or parts[0] not in "DBES":
            continue
        d = ds.setdefault(unescape(parts[1]), {"shape": None, "open": None, "blocks": {}})
        try:
            if parts[0] == "D":
                d["shape"] = (int(parts[3]), int(parts[5]))
            elif parts[0] == "E":
                d["open"] = " ".join(parts[3:])
            elif parts[0] == "B":
                tag, k, row0, n = parts[2], int(parts[3]), int(parts[4]), int(parts[5])
                ok = parts[6] == "ok"
                d["blocks"][(tag, k)] = (row0, n, parts[7] if ok else None, " ".join(parts[7:]))
        except (IndexError, ValueError):
            continue
    return ds


def run_proc(argv, timeout, env=None):
    """(returncode | 'timeout', stdout, stderr) of one process, killed with its group on timeout."""
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             start_new_session=True)
    except OSError as e:
        return -1, "", str(e)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode("latin-1"), err.decode("latin-1")
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, 9)
        except OSError:
            pass
        out, err = p.communicate()
        return "timeout", out.decode("latin-1"), err.decode("latin-1")


def ours(path):
    """1 for a source file of the core (src/) as ASan prints it (relative or absolute)."""
    return path.startswith("src/") or "/src/" in path


def stack_top(stderr):
    """The first frame of a sanitizer report that is not the sanitizer's own,
    and, when that frame is not ours (HDF5, libc), the first one in src/ that
    led there: "H5HG_read (libhdf5...) via ml_vlen_read src/vlen.c:267"."""
    top = via = None
    for line in stderr.splitlines():
        m = re.search(r"(\S+:\d+:\d+): runtime error: (.*)", line)
        if m and top is None:
            return "%s %s" % (os.path.relpath(m.group(1)) if m.group(1).startswith("/") else m.group(1),
                              m.group(2)[:80])
        m = re.match(r"\s*#\d+ 0x[0-9a-f]+ in (\S+) (\S+)", line)
        if not m or "libsanitizer" in m.group(2) or m.group(1).startswith("__interceptor"):
            continue
        where = os.path.relpath(m.group(2)) if m.group(2).startswith("/work") else m.group(2)
        if top is None:
            top = "%s %s" % (m.group(1), where)
            if ours(m.group(2)) or m.group(2).startswith("fuzz/"):
                return top
        elif ours(m.group(2)):
            via = "%s %s" % (m.group(1), where)
            break
    if top and via:
        return "%s via %s" % (top, via)
    return top or "?"


def our_leak(stderr):
    """1 if a LeakSanitizer report has a leak allocated from our code (src/,
    fuzz/): HDF5 1.10.8 leaks on some of its own error paths, which is not ours
    to fix. A leak whose stack is all HDF5 and libc is ignored."""
    for chunk in stderr.split("leak of ")[1:]:
        frames = re.findall(r"#\d+ 0x[0-9a-f]+ in (\S+) (\S+)", chunk.split("\n\n")[0])
        frames = [f for fn, f in frames if "libsanitizer" not in f and not fn.startswith("__interceptor")]
        if frames and ours(frames[0]):  # allocated by the core itself
            return True
    return False


class Case:
    """Runs and classifies one file. bins: (fuzz_read, ref_read)."""

    def __init__(self, bins, workdir, datasets):
        self.fuzz_read, self.ref_read = bins
        self.workdir = workdir
        self.datasets = datasets

    def run(self, path):
        r = {"outcome": None, "detail": [], "stack": None}
        rrc, rout, rerr = run_proc([self.ref_read, path] + self.datasets, REF_TIMEOUT)
        env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS, UBSAN_OPTIONS=UBSAN_OPTIONS)
        mrc, mout, merr = run_proc([self.fuzz_read, path] + self.datasets, ML_TIMEOUT, env)
        r.update(ref=(rrc, rout, rerr[-4000:]), ml=(mrc, mout, merr[-20000:]))
        sanitizer = re.search(r"ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehaviorSanitizer", merr)
        if mrc == "timeout":
            r["outcome"] = "HANG"
            if rrc != 0:
                r["detail"].append("the reference %s too" % ("hung" if rrc == "timeout" else "crashed"))
            return r
        if sanitizer or (mrc != 0 and "LeakSanitizer" not in merr):
            r["outcome"], r["stack"] = "CRASH", stack_top(merr) if sanitizer else "exit %s" % mrc
            if rrc != 0:
                r["detail"].append("the reference crashed too (exit %s)" % rrc)
                # Through a plain HDF5 call the reference makes too, or with no
                # frame of the core at all (HDF5 closing files at exit).
                stack = r["stack"] + " "
                if any(p in stack for p in SHARED_PATHS) or (" via " not in stack and "src/" not in stack):
                    r["outcome"] = "shared-crash"
            return r
        if "LeakSanitizer" in merr and our_leak(merr):
            r["outcome"], r["stack"] = "LEAK", stack_top(merr)
            return r
        if rrc != 0:
            r["outcome"] = "hdf5-crash"
            r["detail"].append("reference exit %s" % rrc)
            return r
        r["outcome"] = self.compare(path, parse(mout), parse(rout), r["detail"])
        return r

    def compare(self, path, ml, ref, detail):
        kinds = set()
        disputed = []  # (path, tag, k, row0, n, ml crc)
        for p in self.datasets:
            m, h = ml.get(p), ref.get(p)
            if m is None or h is None:
                kinds.add("both-refuse" if m is None else "ml-refuses")
                continue
            if m["shape"] is None:
                ref_reads = any(b[2] for b in h["blocks"].values())
                kinds.add("ml-refuses" if ref_reads else "both-refuse")
                continue
            ml_blocks = {key: b for key, b in m["blocks"].items() if b[2] is not None}
            if h["shape"] is None or h["shape"] != m["shape"]:
                if not ml_blocks:
                    kinds.add("both-refuse" if h["shape"] is None else "ml-refuses")
                    continue
                # multiload opened it differently from HDF5: every block it returned is disputed
                detail.append("%s: shape ml %s, hdf5 %s (%s)" % (p, m["shape"], h["shape"], h["open"]))
                for (tag, k), b in ml_blocks.items():
                    disputed.append((p, tag, k, b[0], b[1], b[2]))
                continue
            for (tag, k), b in m["blocks"].items():
                hb = h["blocks"].get(("H", k))
                if b[2] is None:
                    kinds.add("ml-refuses" if hb and hb[2] else "both-refuse")
                elif hb and hb[2] == b[2] and hb[:2] == b[:2]:
                    kinds.add("exact")
                else:
                    disputed.append((p, tag, k, b[0], b[1], b[2]))
        if disputed:
            disputed = self.defined(path, ref, disputed)
            if not disputed:
                return "hdf5-undefined"
        if disputed:
            return self.second_opinion(path, disputed, detail, kinds)
        for k in ("ml-refuses", "exact", "both-refuse"):
            if k in kinds:
                return k
        return "both-refuse"

    def defined(self, path, ref, disputed):
        """The disputed blocks whose bytes HDF5 defines: a second reference read
        into a buffer filled with 0xff instead of 0 returns the same CRC."""
        env = dict(os.environ, REF_FILL="255")
        rrc, rout, _ = run_proc([self.ref_read, path] + self.datasets, REF_TIMEOUT, env)
        if rrc != 0:
            return disputed
        again = parse(rout)
        keep = []
        for d in disputed:
            a = ref.get(d[0], {}).get("blocks", {}).get(("H", d[2]))
            b = again.get(d[0], {}).get("blocks", {}).get(("H", d[2]))
            if not (a and b and a[2] and b[2] and a[2] != b[2]):
                keep.append(d)
        return keep

    def second_opinion(self, path, disputed, detail, kinds):
        """h5py (HDF5 2.0) on the blocks where multiload returned bytes HDF5
        1.10.8 did not: MISMATCH unless h5py returns the same bytes."""
        reqs = sorted({(p, k, row0, n) for p, _, k, row0, n, _ in disputed})
        py = os.path.join(os.path.dirname(sys.executable), "python") if os.path.exists(
            os.path.join(os.path.dirname(sys.executable), "python")) else sys.executable
        rc, out, err = run_proc([py, os.path.join(HERE, "h5py_read.py"), path, json.dumps(reqs)], 60)
        answers = {}
        lines = [ln for ln in out.splitlines() if ln.startswith("B ")]
        for (p, k, row0, n), ln in zip(reqs, lines):
            parts = ln.split(" ")
            answers[(p, k)] = parts[-2] if " ok " in ln else None
        bad = [(p, tag, k, row0, n, crc) for p, tag, k, row0, n, crc in disputed if answers.get((p, k)) != crc]
        for p, tag, k, row0, n, crc in bad[:8]:
            detail.append("%s %s block %d rows %d+%d: ml %s, h5py %s" % (
                p, tag, k, row0, n, crc, answers.get((p, k), "no answer" if rc == 0 else "crashed")))
        if bad:
            return "MISMATCH"
        kinds.add("hdf5-differs")
        return "hdf5-differs"


# -------------------------------------------------------------- the campaign

_W = {}


def _worker_init(args, manifest, bins):
    wd = os.path.join(args.out, "work", str(os.getpid()))
    os.makedirs(wd, exist_ok=True)
    muts = {}
    for name, m in manifest.items():
        with open(os.path.join(args.seeds, m["file"]), "rb") as fh:
            muts[name] = mutate.Mutator(fh.read())
        for aux in m["aux"]:  # an external link's target: beside the case, where HDF5 looks
            shutil.copy(os.path.join(args.seeds, aux), os.path.join(wd, aux))
    _W.update(args=args, manifest=manifest, bins=bins, wd=wd, muts=muts)


def case_file(args, names, i):
    """(seed name, case bytes, mutation words) of case i: deterministic."""
    name = names[i % len(names)]
    rng = random.Random("%d:%d" % (args.seed, i))
    data, what = _W["muts"][name].case(rng)
    return name, data, what


def _one(i):
    args = _W["args"]
    if args.deadline and time.time() > args.deadline:
        return None
    names = sorted(_W["manifest"])
    if args.only:
        names = [n for n in names if n in args.only]
    name, data, what = case_file(args, names, i)
    path = os.path.join(_W["wd"], "case.h5")
    with open(path, "wb") as fh:
        fh.write(data)
    r = Case(_W["bins"], _W["wd"], _W["manifest"][name]["datasets"]).run(path)
    r.update(case=i, seed=name, what=what)
    # shared-crash too: not a finding, but each is reported with its file (docs/fuzzing.md)
    if r["outcome"] in FINDINGS or r["outcome"] == "shared-crash" or args.save_all:
        r["saved"] = save_finding(args, name, i, data, r)
    r.pop("ref"), r.pop("ml")
    return r


def save_finding(args, name, i, data, r):
    d = os.path.join(args.out, "findings")
    os.makedirs(d, exist_ok=True)
    base = os.path.join(d, "%s-%s-s%d-c%d" % (r["outcome"], name, args.seed, i))
    with open(base + ".h5", "wb") as fh:
        fh.write(data)
    with open(base + ".txt", "w") as fh:
        fh.write("outcome: %s\nseed file: %s\ncampaign seed: %d, case %d\nreplay: python fuzz/run.py --seed %d "
                 "--case %d\nstack top: %s\nmutations:\n  %s\ndetail:\n  %s\n\n--- fuzz_read exit %s, stdout:\n%s\n"
                 "--- fuzz_read stderr:\n%s\n--- ref_read exit %s, stdout:\n%s\n--- ref_read stderr:\n%s\n" % (
                     r["outcome"], name, args.seed, i, args.seed, i, r["stack"], "\n  ".join(r["what"]),
                     "\n  ".join(r["detail"]), r["ml"][0], r["ml"][1], r["ml"][2], r["ref"][0], r["ref"][1],
                     r["ref"][2]))
    return base + ".h5"


def summary(results, names):
    counts = {n: dict.fromkeys(OUTCOMES, 0) for n in names}
    for r in results:
        counts[r["seed"]][r["outcome"]] += 1
    cols = [o for o in OUTCOMES if any(counts[n][o] for n in names) or o in FINDINGS]
    lines = ["%-18s" % "seed" + "".join("%15s" % c for c in cols) + "%8s" % "total"]
    tot = dict.fromkeys(cols, 0)
    for n in names:
        lines.append("%-18s" % n + "".join("%15d" % counts[n][c] for c in cols) + "%8d" % sum(counts[n].values()))
        for c in cols:
            tot[c] += counts[n][c]
    lines.append("%-18s" % "total" + "".join("%15d" % tot[c] for c in cols) + "%8d" % sum(tot.values()))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="build/fuzz/seeds", help="seed directory (seeds.py's output)")
    ap.add_argument("--out", default="build/fuzz", help="work, findings and summary go here")
    ap.add_argument("--bin", default="build/fuzz", help="where fuzz_read and ref_read are")
    ap.add_argument("--time", type=float, default=0, help="seconds to run (0: until --cases)")
    ap.add_argument("--cases", type=int, default=0, help="cases to run (0: until --time)")
    ap.add_argument("--seed", type=int, default=1, help="campaign seed: case N of seed S is always the same file")
    ap.add_argument("--first", type=int, default=0, help="first case number")
    ap.add_argument("--case", type=int, default=None, help="run only case N and print everything")
    ap.add_argument("--only", nargs="*", help="only these seed names")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--save-all", action="store_true", help="save every case, not only findings")
    ap.add_argument("--fail-on-finding", action="store_true", help="exit 1 if any finding")
    args = ap.parse_args()
    args.out, args.seeds = os.path.abspath(args.out), os.path.abspath(args.seeds)
    bins = tuple(os.path.abspath(os.path.join(args.bin, b)) for b in ("fuzz_read", "ref_read"))
    for b in bins:
        if not os.access(b, os.X_OK):
            sys.exit("run.py: %s is missing: build it with make fuzz" % b)
    with open(os.path.join(args.seeds, "manifest.json")) as fh:
        manifest = json.load(fh)
    names = sorted(n for n in manifest if not args.only or n in args.only)
    args.deadline = 0

    if args.case is not None:
        _worker_init(args, manifest, bins)
        name, data, what = case_file(args, names, args.case)
        path = os.path.join(_W["wd"], "case.h5")
        with open(path, "wb") as fh:
            fh.write(data)
        r = Case(bins, _W["wd"], manifest[name]["datasets"]).run(path)
        print("case %d on %s: %s %s\n  %s\n  %s" % (args.case, name, r["outcome"], r["stack"] or "",
                                                   "\n  ".join(what), "\n  ".join(r["detail"])))
        print("--- fuzz_read (exit %s)\n%s%s--- ref_read (exit %s)\n%s%s" % (r["ml"][0], r["ml"][1], r["ml"][2],
                                                                          r["ref"][0], r["ref"][1], r["ref"][2]))
        print("case file:", path)
        return 0
    # the seeds themselves first: a valid file must read exactly, else every
    # case of that seed is measured against a broken baseline
    _worker_init(args, manifest, bins)
    bad_seeds = []
    for name in names:
        r = Case(bins, _W["wd"], manifest[name]["datasets"]).run(os.path.join(args.seeds, manifest[name]["file"]))
        if r["outcome"] != "exact":
            bad_seeds.append(name)
            print("SEED %s is not read exactly: %s %s %s" % (name, r["outcome"], r["stack"] or "",
                                                             "; ".join(r["detail"][:3])), flush=True)
    if not args.time and not args.cases:
        args.time = 300
    n_cases = args.cases or int(args.time * 200)
    start = time.time()
    args.deadline = start + args.time if args.time else 0
    results, findings = [], {}
    last = start
    with multiprocessing.Pool(args.jobs, _worker_init, (args, manifest, bins)) as pool:
        for r in pool.imap_unordered(_one, range(args.first, args.first + n_cases), chunksize=1):
            if r is None:
                continue
            results.append(r)
            if r["outcome"] in FINDINGS:
                key = (r["outcome"], r["seed"], r["stack"] or "; ".join(d.split(":")[0] for d in r["detail"][:1]))
                if key not in findings:
                    findings[key] = r
                    print("%s %s case %d: %s\n  %s\n  saved %s" % (r["outcome"], r["seed"], r["case"],
                                                               r["stack"] or "; ".join(r["detail"][:2]),
                                                               "\n  ".join(r["what"]), r["saved"]), flush=True)
            if time.time() - last > 15:
                last = time.time()
                print(">> %d cases, %.1f/s" % (len(results), len(results) / (last - start)), flush=True)
    took = time.time() - start
    shutil.rmtree(os.path.join(args.out, "work"), ignore_errors=True)
    table = summary(results, names)
    n_find = sum(1 for r in results if r["outcome"] in FINDINGS)
    text = "%d cases in %.0f s (%.1f/s, %d jobs), campaign seed %d\n%s\n%d findings (%d distinct)\n" % (
        len(results), took, len(results) / max(took, 1e-9), args.jobs, args.seed, table, n_find, len(findings))
    for (outcome, seed, sig), r in sorted(findings.items()):
        text += "  %s %s: %s  [%s]\n" % (outcome, seed, sig, r["saved"])
    shared = [r for r in results if r["outcome"] == "shared-crash"]
    if shared:
        text += "%d shared-crash (HDF5 1.10.8's own crash, the reference's too):\n" % len(shared)
        for r in sorted(shared, key=lambda r: r["case"]):
            text += "  %s case %d: %s  [%s]\n" % (r["seed"], r["case"], r["stack"], r.get("saved"))
    print(text, end="")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.txt"), "w") as fh:
        fh.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(results, fh)
    if bad_seeds:
        print("seeds not read exactly: %s" % " ".join(bad_seeds))
    return 1 if args.fail_on_finding and (n_find or bad_seeds) else 0


if __name__ == "__main__":
    sys.exit(main())
