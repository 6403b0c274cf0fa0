"""native.py - damaged copies of a file whose datasets multiload opens
natively (src/h5native.c), each read by multiload and by h5py in child
processes and compared (docs/newer-hdf5.md, "Fuzzing").

A case is the seed file with one to three fields of the messages the
native open decodes (dataspace, datatype, fill value, layout, filter
pipeline: h5map.py's map, restricted to object header messages) set to
an interesting value or random bytes (mutate.py's values), or a byte of
such a message flipped, and the object header's lookup3 checksum
recomputed, so the change reaches the decoders instead of the checksum
check. Case N of a campaign seed is the same file on every run.

multiload reads each dataset of the case whole, with
MULTILOAD_NATIVE_OPEN=always, in a child process (a crash is a finding,
not the end of the campaign); h5py reads it in another. Outcomes:
  exact        both read the same bytes (dtype and shape equal)
  both-refuse  neither reads it
  ml-refuses   multiload raised a clear error where h5py read
  ml-reads-intact  h5py refused, multiload returned exactly the seed's
               own data (damage elsewhere in the header that HDF5 checks
               and the native open does not need)
  MISMATCH     multiload returned bytes h5py did not (a finding)
  UNCLEAR      multiload raised something other than OSError, TypeError,
               KeyError or ValueError, or an error that names neither the
               file nor the dataset (a finding)
  CRASH        multiload's child died of a signal (a finding)
  HANG         multiload's child passed its time limit (a finding)

Usage: native.py --seed-file F [--cases N] [--seed S] [--work DIR]
Prints one line per finding and "findings: K" at the end; exit 0.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import h5map  # noqa: E402
import mutate  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the multiload the children import
MSG_FIELDS = ("space.", "dtype", "fill", "layout", "pline", "filter", "msg")
CHILD_TIMEOUT = 120
BATCH = 25  # cases per child process

ML_CHILD = r"""
import hashlib, json, os, sys
os.environ["MULTILOAD_NATIVE_OPEN"] = "always"
import multiload
def plain(dt):
    if dt.names:
        return [[n, plain(dt.fields[n][0]), dt.fields[n][1]] for n in dt.names] + [dt.itemsize]
    if dt.subdtype:
        return [plain(dt.subdtype[0]), list(dt.subdtype[1])]
    return dt.str

fns, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
res = []
for fn in fns:
  out = {}
  res.append(out)
  for n in names:
    try:
        r = multiload.Reader(fn, n_procs=2)
        try:
            a = r.read(r.get_dataset(n)[:])
        finally:
            r.close()
        out[n] = ["ok", plain(a.dtype), list(a.shape),
                  hashlib.sha1(a.tobytes()).hexdigest()]
    except (OSError, TypeError, KeyError, ValueError) as e:
        named = fn in str(e) or n.lstrip("/") in str(e)
        out[n] = ["refused" if named else "unclear", type(e).__name__ + ": " + str(e)[:300]]
    except Exception as e:
        out[n] = ["unclear", type(e).__name__ + ": " + str(e)[:300]]
print(json.dumps(res))
"""

H5PY_CHILD = r"""
import hashlib, json, sys
import h5py, numpy as np
def plain(dt):
    if dt.names:
        return [[n, plain(dt.fields[n][0]), dt.fields[n][1]] for n in dt.names] + [dt.itemsize]
    if dt.subdtype:
        return [plain(dt.subdtype[0]), list(dt.subdtype[1])]
    return dt.str

fns, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
res = []
for fn in fns:
  out = {}
  res.append(out)
  for n in names:
    try:
        with h5py.File(fn, "r") as f:
            a = np.ascontiguousarray(f[n][()])
        out[n] = ["ok", plain(a.dtype), list(a.shape),
                  hashlib.sha1(a.tobytes()).hexdigest()]
    except Exception as e:
        out[n] = ["refused", type(e).__name__ + ": " + str(e)[:200]]
print(json.dumps(res))
"""


def run_child(code, fns, names):
    """("ran", [one {name: result} per file]) or ("CRASH" | "HANG", detail)."""
    # a PYTHONPATH already set (make check-asan's sanitized build) goes first
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), ROOT])))
    try:
        p = subprocess.run([sys.executable, "-c", code, json.dumps(fns), json.dumps(names)], capture_output=True,
                           text=True, timeout=CHILD_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return "HANG", None
    if p.returncode < 0 or p.returncode > 128:
        return "CRASH", p.stderr[-2000:]
    try:
        return "ran", json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "CRASH", (p.stdout + p.stderr)[-2000:]


def datasets(fn):
    import h5py
    names = []
    with h5py.File(fn, "r") as f:
        f.visititems(lambda n, o: names.append("/" + n) if isinstance(o, h5py.Dataset) else None)
    return names


def mutated(seed, m, rng):
    data = bytearray(seed)
    fields = [f for f in m.map.fields if f.struct is not None and f.struct.kind in ("OHDR", "OCHK")
              and f.name.startswith(MSG_FIELDS)]
    what = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        f = rng.choice(fields)
        if rng.random() < 0.25:
            off = f.off + rng.randrange(f.width)
            bit = rng.randrange(8)
            data[off] ^= 1 << bit
            what.append("flip bit %d of %r" % (bit, f))
        elif f.kind == "bytes":
            data[f.off:f.off + f.width] = bytes(rng.getrandbits(8) for _ in range(f.width))
            what.append("random %r" % f)
        else:
            old = int.from_bytes(data[f.off:f.off + f.width], "little")
            v = mutate.interesting(rng, old, f.width)
            if v == old:
                v ^= 1 << rng.randrange(8 * f.width)
            data[f.off:f.off + f.width] = v.to_bytes(f.width, "little")
            what.append("set %r = %d (was %d)" % (f, v, old))
        st = f.struct
        if st.csum is not None and st.csum + 4 <= len(data):
            data[st.csum:st.csum + 4] = h5map.lookup3(bytes(data[st.start:st.csum])).to_bytes(4, "little")
    return bytes(data), what


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-file", required=True)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default=None)
    ap.add_argument("--names", default=None, help="comma-separated datasets (default: all)")
    a = ap.parse_args()
    seed = open(a.seed_file, "rb").read()
    names = a.names.split(",") if a.names else datasets(a.seed_file)
    m = mutate.Mutator(seed)
    work = a.work or tempfile.mkdtemp(prefix="native-fuzz-")
    # the seed's own datasets as h5py reads them: multiload returning exactly
    # these where h5py refuses a damaged copy read intact data past damage
    # elsewhere in the header (ml-reads-intact, counted, not a finding)
    _, intact = run_child(H5PY_CHILD, [a.seed_file], names)
    intact = intact[0] if isinstance(intact, list) else {}
    counts, findings = {}, 0
    for first in range(0, a.cases, BATCH):
        batch = []
        for case in range(first, min(a.cases, first + BATCH)):
            rng = random.Random(a.seed * 1000003 + case)
            data, what = mutated(seed, m, rng)
            fn = os.path.join(work, "case%d.h5" % (case - first))
            with open(fn, "wb") as f:
                f.write(data)
            batch.append((case, fn, data, what))
        fns = [b[1] for b in batch]
        st, ml = run_child(ML_CHILD, fns, names)
        hst, ref = run_child(H5PY_CHILD, fns, names)
        if hst != "ran":
            # HDF5 2.0 itself crashed on one of them: ask h5py one case at a time
            ref = []
            for fn in fns:
                one_st, one = run_child(H5PY_CHILD, [fn], names)
                ref.append(one[0] if one_st == "ran" else {n: ["refused", "h5py " + one_st] for n in names})
        if st != "ran":
            # find the case: one child per case
            per = [run_child(ML_CHILD, [fn], names) for fn in fns]
        else:
            per = [("ran", [r]) for r in ml]
        for i, (case, fn, data, what) in enumerate(batch):
            cst, cml = per[i]
            cml = cml[0] if cst == "ran" else cml
            cref = ref[i] if isinstance(ref, list) else {}
            outcome = {}
            if cst != "ran":
                outcome = {"*": cst}
            else:
                for n in names:
                    mo, ho = cml[n], cref.get(n, ["refused", "h5py crashed"])
                    if mo[0] == "unclear":
                        outcome[n] = "UNCLEAR"
                    elif mo[0] == "ok":
                        if ho[0] == "ok":
                            outcome[n] = "exact" if mo[1:] == ho[1:] else "MISMATCH"
                        else:
                            same = intact.get(n, [None])[0] == "ok" and mo[1:] == intact[n][1:]
                            outcome[n] = "ml-reads-intact" if same else "MISMATCH"
                    else:
                        outcome[n] = "both-refuse" if ho[0] != "ok" else "ml-refuses"
            for n, o in outcome.items():
                counts[o] = counts.get(o, 0) + 1
                if o.isupper():
                    findings += 1
                    keep = os.path.join(work, "%s-s%d-c%d.h5" % (o, a.seed, case))
                    with open(keep, "wb") as f:
                        f.write(data)
                    detail = cml.get(n) if isinstance(cml, dict) else cml
                    print("%s case %d %s: %s; multiload %s; h5py %s; kept %s" % (
                        o, case, n, "; ".join(what), detail, cref.get(n), keep))
    print("cases: %d  outcomes: %s" % (a.cases, json.dumps(counts, sort_keys=True)))
    print("findings: %d" % findings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
