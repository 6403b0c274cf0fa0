"""Crafted HDF5 files for tests/test_hostile_files.py (issue 10's findings).

Each builder writes a small valid file with h5py and then patches the one
structure a finding is about, locating it by its bytes (asserting that the
pattern is unique, so a change in h5py's output fails loudly instead of
patching something else). Offsets follow the HDF5 file format
specification: version-0 superblock, version-1 object headers and v1
B-trees, which is what h5py writes with the default libver.
"""

import struct

import h5py
import numpy as np

#: 1-D chunked datasets: ROWS rows of float32 in chunks of CHUNK rows, so
#: 100 chunks in a two-level v1 B-tree (K=32: leaves of 57 and 43 entries).
ROWS = 1000
CHUNK = 10
#: The fill value, so that "never written" is distinguishable from data.
FILL = -1.0


def values(n=ROWS):
    """Row values: 1, 2, 3, ... (never the fill value)."""
    return np.arange(1, n + 1, dtype="<f4")


def find_unique(data, pattern, what):
    """The one offset of `pattern` in `data`."""
    at = data.find(pattern)
    assert at >= 0, f"{what}: not found"
    assert data.find(pattern, at + 1) < 0, f"{what}: found more than once"
    return at


def patch(fn, offset, raw):
    with open(fn, "r+b") as f:
        f.seek(offset)
        f.write(raw)


def write_chunked(fn, **kw):
    """'d': ROWS float32 rows in CHUNK-row chunks, fill value FILL."""
    with h5py.File(fn, "w") as f:
        f.create_dataset("d", data=values(), chunks=(CHUNK,), fillvalue=FILL, **kw)
    return fn


def write_compact(fn, data):
    """'c': `data` in a compact layout (h5py's high level cannot ask for one)."""
    with h5py.File(fn, "w") as f:
        space = h5py.h5s.create_simple(data.shape)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        dsid = h5py.h5d.create(f.id, b"c", h5py.h5t.py_create(data.dtype), space, dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
    return fn


def compact_size_at(fn, data):
    """Offset of the 2-byte stored size in the compact layout message
    (version 3: version, class 0, size, then the raw data)."""
    raw = open(fn, "rb").read()
    head = bytes([3, 0]) + struct.pack("<H", data.nbytes) + data.tobytes()[:16]
    return find_unique(raw, head, "compact layout message") + 2


def set_dims(fn, old, new):
    """Replace the dataspace dims `old` (a tuple) by `new` wherever the
    dataspace message stores them (current and maximum dims)."""
    raw = open(fn, "rb").read()
    pat = struct.pack(f"<{len(old)}Q", *old)
    at, hits = raw.find(pat), []
    while at >= 0:
        hits.append(at)
        at = raw.find(pat, at + 1)
    assert 1 <= len(hits) <= 2, f"dataspace dims {old}: {len(hits)} hits"
    for h in hits:
        patch(fn, h, struct.pack(f"<{len(new)}Q", *new))


def btree_nodes(fn):
    """{level: [offset]} of the raw-data-chunk v1 B-tree nodes ('TREE', type 1)."""
    raw = open(fn, "rb").read()
    nodes, at = {}, raw.find(b"TREE")
    while at >= 0:
        if raw[at + 4] == 1:
            nodes.setdefault(raw[at + 5], []).append(at)
        at = raw.find(b"TREE", at + 4)
    return nodes


#: A 1-D dataset's chunk key: stored size (4), filter mask (4), the row
#: offset and the element-size offset (8 each); then an 8-byte child address.
KEY = 24
ENTRY = KEY + 8


def key_at(node, i):
    """Offset of key i of the node at `node` (after signature, type, level,
    entries and two 8-byte sibling addresses)."""
    return node + 8 + 16 + ENTRY * i


def read_key(fn, node, i):
    """(stored size, filter mask, row offset, element offset) of key i."""
    with open(fn, "rb") as f:
        f.seek(key_at(node, i))
        return struct.unpack("<IIQQ", f.read(KEY))


def set_key(fn, node, i, row=None, elem=None, size=None):
    at = key_at(node, i)
    if size is not None:
        patch(fn, at, struct.pack("<I", size))
    if row is not None:
        patch(fn, at + 8, struct.pack("<Q", row))
    if elem is not None:
        patch(fn, at + 16, struct.pack("<Q", elem))


def chunk_key_of(fn, path, i):
    """Offset of the leaf key of chunk i (the key precedes its child address)."""
    with h5py.File(fn, "r") as f:
        addr = f[path].id.get_chunk_info(i).byte_offset
    raw = open(fn, "rb").read()
    return find_unique(raw, struct.pack("<Q", addr), f"address of chunk {i}") - KEY


def filter_value_at(fn, name):
    """Offset of the first client value of filter `name` in a version-1
    filter pipeline message: id, name length, flags, value count (2 bytes
    each), the name padded to 8 bytes, then the values (4 bytes each)."""
    raw = open(fn, "rb").read()
    nm = name.encode() + b"\0"
    padded = nm + b"\0" * (-len(nm) % 8)
    at = find_unique(raw, padded, f"filter {name}")
    assert struct.unpack("<H", raw[at - 6:at - 4])[0] == len(nm), f"filter {name}: not a pipeline entry"
    return at + len(padded)


def set_eoa(fn, eoa):
    """Record `eoa` as the end-of-file address of a version-0 superblock,
    without cutting the file (the bytes past it stay, HDF5 will not read them)."""
    with open(fn, "rb") as f:
        head = f.read(48)
    assert head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] == 0 and head[13] == 8
    patch(fn, 40, struct.pack("<Q", eoa))
