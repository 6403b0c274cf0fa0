"""minimize.py - reduce a fuzz finding to the smallest byte patch against
its seed that still gives the same outcome.

A case differs from its seed in some bytes (and maybe a shorter length).
The differing bytes are grouped in runs; delta debugging (ddmin) drops
runs while the outcome holds, then single bytes inside the runs left, then
tries to undo the truncation. "The same outcome" is the outcome class and
its signature: the top stack frame of a CRASH or LEAK, the datasets of a
MISMATCH. Each test is a full fuzz/run.py case (both readers, fresh
processes), so a reduction takes a few seconds to a minute.

Writes FINDING.min.h5 and FINDING.min.json (seed, length, patch as
[offset, hex bytes], outcome, signature) beside the finding.
Usage: python fuzz/minimize.py build/fuzz/findings/CRASH-...h5 [--seed-name NAME]
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import h5map  # noqa: E402
import run  # noqa: E402


def signature(r):
    if r["outcome"] in ("CRASH", "LEAK"):
        return r["outcome"], (r["stack"] or "").split(" ")[0]
    if r["outcome"] == "MISMATCH":
        return r["outcome"], tuple(sorted({d.split(" ")[0] for d in r["detail"]}))
    return r["outcome"], None


class Tester:
    def __init__(self, seed, length, bins, workdir, datasets, target):
        self.seed, self.length, self.target = seed, length, target
        self.case = run.Case(bins, workdir, datasets)
        self.path = os.path.join(workdir, "min.h5")
        self.tests = 0

    def build(self, patch, length):
        data = bytearray(self.seed)
        for off, b in patch:
            data[off] = b
        return bytes(data[:length])

    def holds(self, patch, length):
        with open(self.path, "wb") as fh:
            fh.write(self.build(patch, length))
        self.tests += 1
        return signature(self.case.run(self.path)) == self.target


def ddmin(items, test):
    """A 1-minimal sublist of items (a list of lists of patch bytes) for which test holds."""
    n = 2
    while len(items) >= 2:
        size = max(1, len(items) // n)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        reduced = False
        for i in range(len(chunks)):
            rest = [x for j, c in enumerate(chunks) if j != i for x in c]
            if test(rest):
                items, n, reduced = rest, max(n - 1, 2), True
                break
        if not reduced:
            if n >= len(items):
                break
            n = min(len(items), n * 2)
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("finding")
    ap.add_argument("--seed-name", help="seed the finding was made from (default: from its .txt)")
    ap.add_argument("--seeds", default="build/fuzz/seeds")
    ap.add_argument("--bin", default="build/fuzz")
    args = ap.parse_args()
    name = args.seed_name
    txt = os.path.splitext(args.finding)[0] + ".txt"
    if not name and os.path.exists(txt):
        m = re.search(r"^seed file: (\S+)", open(txt).read(), re.M)
        name = m and m.group(1)
    if not name:
        sys.exit("minimize.py: give --seed-name (no .txt beside the finding)")
    manifest = json.load(open(os.path.join(args.seeds, "manifest.json")))
    entry = manifest[name]
    seed = open(os.path.join(args.seeds, entry["file"]), "rb").read()
    case = open(args.finding, "rb").read()
    bins = tuple(os.path.abspath(os.path.join(args.bin, b)) for b in ("fuzz_read", "ref_read"))
    work = tempfile.mkdtemp(prefix="fuzz-min-")
    try:
        for aux in entry["aux"]:
            shutil.copy(os.path.join(args.seeds, aux), os.path.join(work, aux))
        first = run.Case(bins, work, entry["datasets"])
        path = os.path.join(work, "orig.h5")
        open(path, "wb").write(case)
        target = signature(first.run(path))
        print("finding %s: %s %s" % (os.path.basename(args.finding), *target))
        if target[0] not in run.FINDINGS:
            sys.exit("minimize.py: the file no longer gives a finding (%s): nothing to minimize" % target[0])
        t = Tester(seed, len(case), bins, work, entry["datasets"], target)
        diff = [(i, case[i]) for i in range(min(len(seed), len(case))) if case[i] != seed[i]]
        runs = []
        for off, b in diff:
            if runs and runs[-1][-1][0] == off - 1:
                runs[-1].append((off, b))
            else:
                runs.append([(off, b)])
        length = len(case)
        print("  %d bytes differ in %d runs, length %d of %d" % (len(diff), len(runs), length, len(seed)))
        runs = ddmin(runs, lambda rs: t.holds([x for r in rs for x in r], length))
        single = [[x] for r in runs for x in r]
        single = ddmin(single, lambda bs: t.holds([x for b in bs for x in b], length))
        patch = [x for b in single for x in b]
        if length < len(seed) and t.holds(patch, len(seed)):
            length = len(seed)  # the truncation did not matter
        elif length < len(seed):
            # keep a truncation, but as late as still holds (binary search)
            lo, hi = length, len(seed)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if t.holds(patch, mid):
                    lo = mid
                else:
                    hi = mid
            length = lo
        if not t.holds(patch, length):
            sys.exit("minimize.py: the reduced file does not reproduce (a flaky outcome?): kept the original")
        base = os.path.splitext(args.finding)[0]
        open(base + ".min.h5", "wb").write(t.build(patch, length))
        fields = h5map.H5Map(seed).fields
        info = {"fields": sorted({f.name for off, _ in patch for f in fields if f.off <= off < f.off + f.width}),
                "seed": name, "seed_bytes": len(seed), "length": length,
                "patch": [[off, "%02x" % b] for off, b in patch], "outcome": target[0],
                "signature": target[1], "datasets": entry["datasets"], "tests": t.tests}
        json.dump(info, open(base + ".min.json", "w"), indent=1)
        print("  minimal: %d byte(s) patched%s, %d tests -> %s.min.h5" % (
            len(patch), ", truncated at %d" % length if length < len(seed) else "", t.tests, base))
        fields = h5map.H5Map(seed).fields
        for off, b in patch:
            names = [f.name for f in fields if f.off <= off < f.off + f.width]
            print("    @%d: %02x (seed %02x) %s" % (off, b, seed[off], " ".join(names) or "(payload)"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
