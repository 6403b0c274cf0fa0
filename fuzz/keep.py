"""keep.py - keep a (minimised) fuzz finding as a regression file.

Copies FILE into tests/fuzz_regressions/ under a short name and adds it to
tests/fuzz_regressions/index.json with its description, its seed, the
datasets to read and the outcome it had; tests/test_fuzz_regressions.py
then opens it on every `make test`. Keep a finding only once its cause is
fixed: the test requires multiload to refuse it (naming the file) or to
return h5py's bytes, so a finding kept before its fix fails the suite.

The seed, datasets and outcome come from FILE's .min.json (minimize.py)
or .txt (run.py) beside it, or from --seed-name. The seed's auxiliary
files (an external link's target) are copied beside it once.

Usage: python fuzz/keep.py build/fuzz/findings/CRASH-x.min.h5 "what it triggered" [--name NAME]
"""

import argparse
import json
import os
import re
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.environ.get("MULTILOAD_FUZZ_REGRESSIONS", os.path.join(ROOT, "tests", "fuzz_regressions"))


def describe(path, seed_name):
    base = path[:-len(".min.h5")] if path.endswith(".min.h5") else os.path.splitext(path)[0]
    info = {"seed": seed_name, "outcome": None, "signature": None}
    if os.path.exists(base + ".min.json"):
        m = json.load(open(base + ".min.json"))
        info.update(seed=seed_name or m["seed"], outcome=m["outcome"], signature=m["signature"])
    elif os.path.exists(base + ".txt"):
        t = open(base + ".txt").read()
        info["seed"] = seed_name or re.search(r"^seed file: (\S+)", t, re.M).group(1)
        info["outcome"] = re.search(r"^outcome: (\S+)", t, re.M).group(1)
        info["signature"] = re.search(r"^stack top: (.*)$", t, re.M).group(1)
    if not info["seed"]:
        sys.exit("keep.py: no .min.json or .txt beside %s: give --seed-name" % path)
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("description")
    ap.add_argument("--name", help="file name in tests/fuzz_regressions (default: from the finding's)")
    ap.add_argument("--seed-name")
    ap.add_argument("--hdf5-crashes", action="store_true",
                    help="HDF5's own read crashes on the file: the test checks only that multiload refuses it")
    ap.add_argument("--seeds", default=os.path.join(ROOT, "build", "fuzz", "seeds"))
    args = ap.parse_args()
    info = describe(args.file, args.seed_name)
    manifest = json.load(open(os.path.join(args.seeds, "manifest.json")))
    entry = manifest[info["seed"]]
    name = args.name or re.sub(r"(\.min)?\.h5$", "", os.path.basename(args.file)).lower() + ".h5"
    os.makedirs(DEST, exist_ok=True)
    idx_path = os.path.join(DEST, "index.json")
    index = json.load(open(idx_path)) if os.path.exists(idx_path) else []
    if any(e["file"] == name for e in index):
        sys.exit("keep.py: %s is already kept" % name)
    shutil.copy(args.file, os.path.join(DEST, name))
    for aux in entry["aux"]:
        if not os.path.exists(os.path.join(DEST, aux)):
            shutil.copy(os.path.join(args.seeds, aux), os.path.join(DEST, aux))
    index.append({"file": name, "description": args.description, "seed": info["seed"],
                  "datasets": entry["datasets"], "aux": entry["aux"], "outcome": info["outcome"],
                  "signature": info["signature"], "hdf5_crashes": args.hdf5_crashes})
    with open(idx_path, "w") as fh:
        json.dump(index, fh, indent=1)
        fh.write("\n")
    print("kept %s (%s); run: .venv/bin/python -m pytest -q tests/test_fuzz_regressions.py" % (
        os.path.join(DEST, name), args.description))


if __name__ == "__main__":
    main()
