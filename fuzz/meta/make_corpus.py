"""Seed corpus for fuzz_meta: whole HDF5 files (the end-to-end fuzz seeds of
fuzz/seeds.py, at most MAX_SEED bytes each), each with every dataset path of
its manifest as one harness input (fuzz_meta.c: a length byte, the path,
the image), plus a few paths through soft links, "." and repeated slashes.

Usage: make_corpus.py OUTDIR   (writes OUTDIR/*.bin and prints a manifest)
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_SEED = 64 * 1024


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(HERE, "..", "seeds.py"), tmp], check=True,
                       stdout=subprocess.DEVNULL)
        manifest = json.load(open(os.path.join(tmp, "manifest.json")))
        for name, e in sorted(manifest.items()):
            image = open(os.path.join(tmp, e["file"]), "rb").read()
            if len(image) > MAX_SEED:
                continue
            paths = list(e["datasets"]) + ["/", "/nothere", "//" + e["datasets"][0].lstrip("/"),
                                           "/./" + e["datasets"][0].lstrip("/")]
            for p in paths:
                pb = p.encode()[:255]
                data = bytes([len(pb)]) + pb + image
                fn = "%s-%s.bin" % (name, hashlib.sha1(data).hexdigest()[:12])
                with open(os.path.join(out, fn), "wb") as fh:
                    fh.write(data)
                print(fn, name, p, len(image))


if __name__ == "__main__":
    main()
