"""Seed corpus for fuzz_gheap: global heap collections, each turned into one
harness input (gheap_harness.h: a parameter header, then the image).

Real collections come from files written by PyTables VLArrays and h5py
vlen datasets (ints, floats, strings, bytes, pickled objects; rows small
and large, so collections hold hundreds of objects or one; rows rewritten,
which leaves dead objects and free space; lengths of 8, 4 and 2 bytes),
found by their "GCOL" signature and cut out of the file. A few are cut
with bytes before them (a non-zero address) or with the limit a little
past the image (the read callback then answers "truncated"), with a
read that fails, or with an allocation that fails, so those paths have
seeds too.

Hand-made ones cover what HDF5's writers rarely produce: one huge object
(a collection larger than the 64 KiB read window), many tiny ones across
window boundaries, free space at the end, in the middle, a short tail,
only free space, index 65535, and each at lengths of 8, 4 and 2 bytes.

Usage: make_corpus.py OUTDIR   (writes OUTDIR/*.bin and prints a manifest)
"""
import hashlib
import os
import struct
import sys
import tempfile

import h5py
import numpy as np
import tables

HEADER = struct.Struct("<BBHB3xQQ")  # sizeof_size, fail_at, why_len, alloc_fail_at, limit, addr
MAX_SEED = 256 * 1024  # the libFuzzer run's -max_len; larger collections are cut (the walk then refuses)


def harness_input(ss, image, addr=0, limit=0, fail_at=0, why_len=0, alloc_fail_at=0):
    return HEADER.pack(ss, fail_at, why_len, alloc_fail_at, limit, addr) + image


def sizes_of(path):
    with h5py.File(path, "r") as f:
        return f.id.get_create_plist().get_sizes()[1]


def collections(path):
    """(offset, size field, bytes) of each GCOL v1 collection in the file."""
    ss = sizes_of(path)
    with open(path, "rb") as fh:
        img = fh.read()
    at = img.find(b"GCOL\x01")
    while at >= 0:
        size = int.from_bytes(img[at + 8:at + 8 + ss], "little")
        if 4096 <= size <= len(img) - at:
            yield ss, at, size, img[at:at + size]
        at = img.find(b"GCOL\x01", at + 1)


def pytables_files(tmp, rng):
    out = []
    p = os.path.join(tmp, "pt_vlarray.h5")
    with tables.open_file(p, "w") as f:
        a = f.create_vlarray("/", "ints", tables.Int32Atom())
        for n in list(range(0, 40)) + [0, 1, 2, 3]:
            a.append(rng.integers(0, 1000, size=n, dtype=np.int32))
        s = f.create_vlarray("/", "strings", tables.VLStringAtom())
        for i in range(300):
            s.append(b"row %d " % i * (i % 7))
        u = f.create_vlarray("/", "unicode", tables.VLUnicodeAtom())
        for i in range(50):
            u.append("r\u00e9sum\u00e9 %d" % i * (i % 3))
        o = f.create_vlarray("/", "objects", tables.ObjectAtom())
        for i in range(40):
            o.append({"i": i, "l": list(range(i % 11))})
        fl = f.create_vlarray("/", "floats", tables.Float64Atom(shape=(3,)),
                              filters=tables.Filters(complevel=5, complib="zlib"))
        for n in (1, 5, 200, 0, 3):
            fl.append(rng.random((n, 3)))
    out.append(("pt_vlarray", p))
    p = os.path.join(tmp, "pt_bigrows.h5")
    with tables.open_file(p, "w") as f:
        a = f.create_vlarray("/", "big", tables.UInt8Atom())
        for n in (5000, 20000, 70000, 3, 100000):  # each row its own collection once past 4 KiB
            a.append(rng.integers(0, 256, size=n, dtype=np.uint8))
    out.append(("pt_bigrows", p))
    return out


def h5py_files(tmp, rng):
    out = []
    for ss in (8, 4, 2):
        p = os.path.join(tmp, f"h5py_vlen_ss{ss}.h5")
        fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
        try:
            fcpl.set_sizes(8 if ss == 8 else 4, ss)
            fid = h5py.h5f.create(p.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl)
        except Exception as e:  # a library that refuses these sizes: no seed of them
            print(f"# sizes {ss}: {e}", file=sys.stderr)
            continue
        with h5py.File(fid) as f:
            d = f.create_dataset("ints", (120,), dtype=h5py.vlen_dtype(np.int32))
            for i in range(120):
                d[i] = rng.integers(0, 100, size=i % 17, dtype=np.int32)
            s = f.create_dataset("str", (200,), dtype=h5py.string_dtype())
            s[...] = [("x%d" % i) * (i % 5) for i in range(200)]
            b = f.create_dataset("bytes", (30,), dtype=h5py.string_dtype("ascii"))
            b[...] = [b"abc" * i for i in range(30)]
            if ss != 2:  # a 2-byte length caps a collection at 64 KiB
                big = f.create_dataset("big", (3,), dtype=h5py.vlen_dtype(np.float64))
                big[0] = rng.random(9000)
                big[1] = rng.random(2)
                big[2] = rng.random(600)
            # Rows rewritten: the old objects stay as garbage, new ones fill the free space.
            for i in range(0, 120, 3):
                d[i] = rng.integers(0, 100, size=(i % 5) + 20, dtype=np.int32)
            del f["str"]
        out.append((f"h5py_vlen_ss{ss}", p))
    return out


def obj(idx, data, ss, nrefs=1):
    # The header is 16 bytes whatever the length size (HDF5's H5HG_SIZEOF_OBJHDR aligns it to 8).
    return struct.pack("<HHI", idx, nrefs, 0) + len(data).to_bytes(ss, "little").ljust(8, b"\0") + data + \
        bytes(-len(data) % 8)


def free(size, ss):
    return struct.pack("<HHI", 0, 0, 0) + size.to_bytes(ss, "little").ljust(8, b"\0") + bytes(size - 16)


def collection(body, ss, total=None, tail_free=True):
    """GCOL v1 around body; the rest up to total (>= 4096) becomes a free space (or raw tail)."""
    total = total or max(4096, 16 + len(body) + (16 if tail_free else 0))
    total = (total + 7) // 8 * 8
    rest = total - 16 - len(body)
    if rest >= 16 and tail_free:
        body += free(rest, ss)
    else:
        body += bytes(rest)
    return b"GCOL\x01\0\0\0" + total.to_bytes(ss, "little").ljust(8, b"\0") + body


def hand_made(ss, rng):
    seeds = {}
    big = 120 * 1024 if ss > 2 else 60 * 1024
    seeds["huge_object"] = collection(obj(1, rng.bytes(big), ss), ss, tail_free=False)
    tiny = b"".join(obj(i + 1, rng.bytes(i % 9), ss) for i in range(3000 if ss > 2 else 2000))
    seeds["many_tiny"] = collection(tiny, ss)  # > 64 KiB: objects across window boundaries
    seeds["tiny_4096"] = collection(b"".join(obj(i + 1, b"", ss) for i in range(255)), ss, 4096)
    seeds["free_at_end"] = collection(obj(1, b"hello", ss) + obj(2, rng.bytes(100), ss), ss, 4096)
    head = obj(3, b"a", ss) + free(64, ss)  # then one object to the end: the free space is not last
    seeds["free_in_middle"] = collection(head + obj(1, rng.bytes(4096 - 16 - len(head) - 16), ss), ss, 4096)
    seeds["short_tail"] = collection(obj(1, rng.bytes(4096 - 16 - 16 - 8), ss), ss, 4096, tail_free=False)
    seeds["only_free"] = collection(b"", ss, 4096)
    seeds["index_65535"] = collection(obj(65535, b"last", ss) + obj(1, b"first", ss) + obj(300, b"", ss), ss, 4096)
    return seeds


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(10)
    written = {}

    def put(name, blob):
        h = hashlib.sha1(blob).hexdigest()[:12]
        if h in written.values():
            return
        written[name] = h
        with open(os.path.join(outdir, name + ".bin"), "wb") as fh:
            fh.write(blob)
        print(f"{name:40} {len(blob):8}")

    with tempfile.TemporaryDirectory() as tmp:
        files = pytables_files(tmp, rng) + h5py_files(tmp, rng)
        for name, path in files:
            for n, (ss, at, size, col) in enumerate(collections(path)):
                cut = col[:MAX_SEED - HEADER.size]
                put(f"{name}_gcol{n}_at{at}", harness_input(ss, cut))
                if n == 0:  # the other paths, on one real collection per file
                    with open(path, "rb") as fh:
                        img = fh.read()
                    pre = img[max(0, at - 40):at]
                    put(f"{name}_gcol{n}_addr{len(pre)}",
                        harness_input(ss, pre + cut[:4096 + 64], addr=len(pre), limit=len(pre) + size))
                    put(f"{name}_gcol{n}_fail2", harness_input(ss, cut[:8192], limit=size, fail_at=2, why_len=40))
                    put(f"{name}_gcol{n}_nomem2", harness_input(ss, cut, alloc_fail_at=2))
    for ss in (8, 4, 2):
        for name, col in hand_made(ss, rng).items():
            put(f"hand_{name}_ss{ss}", harness_input(ss, col[:MAX_SEED - HEADER.size]))
    print(f"# {len(written)} seeds", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
