"""mutate.py - structure-aware mutations of a seed file, for fuzz/run.py.

A case is its seed with one to four mutations, each drawn by a
random.Random seeded with (campaign seed, case number), so case N of a
campaign is the same file on every machine and every run: a finding is
reproduced by its number alone (run.py --case N).

What a mutation does, by weight:
- sets one field of the seed's map (h5map.py) -- a B-tree key, child
  pointer, entry count or level; a layout, dataspace, datatype, fill or
  filter-pipeline field; a message header; a superblock field (the end of
  file address among them); a heap, symbol node or global heap field --
  to an interesting value: 0, 1, all ones, the old value +/-1, doubled or
  halved, a power of two, the dimension extremes of issue 10 (2^62,
  2^60+1, 2^32, ...), or random bytes;
- then, for a field in a checksummed structure, recomputes the lookup3
  checksum in about half of the cases: with a stale checksum HDF5 refuses
  the block, which tests only that refusal; with a fresh one the mutation
  reaches the parsers behind it;
- overwrites bytes of chunk or contiguous payload (or of any byte no
  structure claims), flips bits anywhere, or truncates the file.
Each mutation is described in words ("set tree.key3.off0@1234/8 = 2^62,
checksum fixed") for the finding's report.
"""

import random

import h5map

DIM_EXTREMES = [1 << 62, (1 << 60) + 1, 1 << 32, (1 << 32) - 1, (1 << 32) + 1, 1 << 31, 1 << 63,
                (1 << 64) - 2, 1 << 48, 1 << 40]

# weights of field kinds: the ones the core itself interprets weigh most
KIND_WEIGHT = {"dim": 6, "key": 6, "size": 4, "count": 4, "level": 4, "addr": 4, "eof": 3, "rank": 3,
               "filter_id": 3, "cd_value": 3, "entry": 3, "offset": 2, "flags": 2, "enum": 2, "msgtype": 1,
               "version": 1, "bytes": 2}


def interesting(rng, old, width):
    """A new value for a width-byte unsigned field whose value is old."""
    top = (1 << (8 * width)) - 1
    r = rng.random()
    if r < 0.12:
        v = 0
    elif r < 0.20:
        v = 1
    elif r < 0.30:
        v = top
    elif r < 0.45:
        v = old + rng.choice((1, -1, 2, -2))
    elif r < 0.55:
        v = old * 2 if rng.random() < 0.5 else old // 2
    elif r < 0.68:
        v = 1 << rng.randrange(8 * width)
    elif r < 0.78 and width >= 4:
        v = rng.choice(DIM_EXTREMES) if width == 8 else rng.choice((1 << 31, (1 << 31) - 1, 1 << 16, 0xFFFF))
    elif r < 0.85:
        v = old ^ (1 << rng.randrange(8 * width))
    else:
        v = rng.getrandbits(8 * width)
    return v & top


class Mutator:
    def __init__(self, data, aux_names=()):
        self.seed = bytes(data)
        self.map = h5map.H5Map(self.seed)
        self.weights = [KIND_WEIGHT.get(f.kind, 1) for f in self.map.fields]
        self.payloads = [(o, n) for o, n in self.map.payloads if 0 < n and o + 1 < len(self.seed)]
        claimed = bytearray(len(self.seed))
        for st in self.map.structs:
            claimed[max(0, st.start):min(len(self.seed), st.end)] = b"\x01" * (
                min(len(self.seed), st.end) - max(0, st.start))
        self.unclaimed = [i for i in range(0, len(self.seed), 16) if not claimed[i]]

    def case(self, rng):
        """(bytes of a new case, list of words describing its mutations)."""
        data = bytearray(self.seed)
        r = rng.random()
        n = 1 if r < 0.6 else 2 if r < 0.85 else rng.randint(3, 4)
        what = []
        truncate = None
        for _ in range(n):
            r = rng.random()
            if r < 0.70 and self.map.fields:
                what.append(self._field(rng, data))
            elif r < 0.84:
                what.append(self._payload(rng, data))
            elif r < 0.93:
                off = rng.randrange(len(data))
                bit = rng.randrange(8)
                data[off] ^= 1 << bit
                what.append("flip bit %d of byte %d" % (bit, off))
            else:
                truncate = self._truncation(rng, len(data))
        if truncate is not None:
            del data[truncate:]
            what.append("truncate at %d of %d" % (truncate, len(self.seed)))
        return bytes(data), what

    def _field(self, rng, data):
        f = rng.choices(self.map.fields, self.weights)[0]
        old = int.from_bytes(data[f.off:f.off + f.width], "little")
        if f.kind == "bytes":
            new_bytes = bytes(rng.getrandbits(8) for _ in range(f.width))
            data[f.off:f.off + f.width] = new_bytes
            desc = "set %r = %s" % (f, new_bytes.hex())
        else:
            v = interesting(rng, old, f.width)
            if v == old:  # a mutation that changes nothing tests nothing
                v ^= 1 << rng.randrange(8 * f.width)
            data[f.off:f.off + f.width] = v.to_bytes(f.width, "little")
            desc = "set %r = %d (was %d)" % (f, v, old)
        st = f.struct
        if st is not None and st.csum is not None and st.csum + 4 <= len(data) and rng.random() < 0.5:
            data[st.csum:st.csum + 4] = h5map.lookup3(bytes(data[st.start:st.csum])).to_bytes(4, "little")
            desc += ", checksum fixed"
        return desc

    def _payload(self, rng, data):
        if self.payloads and (rng.random() < 0.7 or not self.unclaimed):
            off, n = rng.choice(self.payloads)
            at = off + rng.randrange(max(1, min(n, len(data) - off)))
            where = "payload@%d" % off
        elif self.unclaimed:
            at = rng.choice(self.unclaimed) + rng.randrange(16)
            where = "unclaimed"
        else:
            at = rng.randrange(len(data))
            where = "anywhere"
        at = min(at, len(data) - 1)
        k = min(rng.choice((1, 1, 2, 4, 8, 16)), len(data) - at)
        if rng.random() < 0.5:
            new = bytes(rng.getrandbits(8) for _ in range(k))
        else:
            new = bytes([rng.choice((0, 0xFF))]) * k
        data[at:at + k] = new
        return "overwrite %d bytes at %d (%s) with %s" % (k, at, where, new.hex())

    def _truncation(self, rng, size):
        r = rng.random()
        if r < 0.4 and self.map.structs:  # inside, or just after, a structure
            st = rng.choice(self.map.structs)
            return max(1, min(size - 1, rng.randrange(st.start, max(st.start + 1, st.end + 1))))
        if r < 0.6:
            return max(1, size - rng.randrange(1, 64))
        return rng.randrange(1, size)
