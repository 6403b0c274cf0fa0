"""h5map.py - a map of where each metadata field of an HDF5 file lies, for
the structure-aware mutator (mutate.py).

It parses only the seeds (files HDF5 wrote correctly), once per seed, so
it may be simple rather than defensive: a structure it cannot make sense
of is skipped, never guessed at. What it knows:

- the superblock (v0, v1, v2, v3) and, through it, the base address;
- object headers v1 and v2, continuation blocks (OCHK), and in them the
  messages the core reads: dataspace 0x1, datatype 0x3, old and new fill
  value 0x4/0x5, layout 0x8, filter pipeline 0xB, links 0x6, symbol
  table 0x11, continuation 0x10; other messages as their headers only;
- groups: v1 B-trees of symbol nodes, local heaps (HEAP), symbol nodes
  (SNOD); hard links of new-style groups;
- chunk indexes: v1 B-trees of chunks (TREE: keys, child pointers,
  levels, entry counts, and the chunk payloads they point at), fixed
  arrays (FAHD, FADB), extensible arrays (EAHD, EAIB, EASB, EADB) and v2
  B-trees (BTHD, BTIN, BTLF), found by their signatures;
- global heap collections (GCOL: VLArray data) and their objects.

A field is (offset, width, kind, name). Checksummed structures (v2+
superblock, OHDR/OCHK, FA/EA/BT2 blocks) are recorded with the range
their Jenkins lookup3 checksum covers, so a mutation can recompute it
(else HDF5 refuses the block and the mutation tests only that refusal).
Where a structure's length is not known from its header, its end is found
as the first offset whose checksum matches the four bytes that follow.
"""

import ctypes
import ctypes.util
import os
import struct
import subprocess

SIG_SB = b"\x89HDF\r\n\x1a\n"
CHECKSUMMED = (b"OHDR", b"OCHK", b"FAHD", b"FADB", b"EAHD", b"EAIB", b"EASB", b"EADB",
               b"BTHD", b"BTIN", b"BTLF", b"FRHP", b"FHDB", b"FHIB", b"FSHD", b"FSSE", b"SMTB", b"SMLI")
MAX_SEARCH = 16384  # bytes: the longest structure whose end is searched for

_lookup3 = None


def lookup3(data):
    """HDF5's metadata checksum (Jenkins lookup3, initval 0), through the
    linked HDF5 library's own H5_checksum_lookup3."""
    global _lookup3
    if _lookup3 is None:
        _lookup3 = _load_lookup3()
    return _lookup3(data, len(data), 0)


def _load_lookup3():
    names = []
    try:
        libdir = subprocess.run(["pkg-config", "--variable=libdir", "hdf5"], capture_output=True,
                                text=True, check=False).stdout.strip()
        if libdir:
            names.append(os.path.join(libdir, "libhdf5.so"))
    except OSError:
        pass
    names += [ctypes.util.find_library("hdf5_serial") or "", ctypes.util.find_library("hdf5") or ""]
    for name in names:
        if name and (os.path.exists(name) or "/" not in name):
            try:
                fn = ctypes.CDLL(name).H5_checksum_lookup3
            except (OSError, AttributeError):
                continue
            fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32]
            fn.restype = ctypes.c_uint32
            return fn
    raise RuntimeError("no libhdf5 with H5_checksum_lookup3 found (pkg-config hdf5)")


class Field:
    __slots__ = ("off", "width", "kind", "name", "struct")

    def __init__(self, off, width, kind, name, struct_=None):
        self.off, self.width, self.kind, self.name, self.struct = off, width, kind, name, struct_

    def __repr__(self):
        return "%s@%d/%d" % (self.name, self.off, self.width)


class Struct:
    """A structure at [start, end); csum: offset of its checksum (covering
    [start, csum)), or None."""
    __slots__ = ("kind", "start", "end", "csum")

    def __init__(self, kind, start, end, csum=None):
        self.kind, self.start, self.end, self.csum = kind, start, end, csum


class H5Map:
    def __init__(self, data):
        self.data = bytes(data)
        self.fields = []
        self.structs = []
        self.payloads = []       # (offset, length) of chunk and contiguous data
        self.O = self.L = 8
        self.base = 0
        self._seen = set()
        self._chunk_ndims = {}   # v1 B-tree address -> key dimensionality
        self._parse()

    # -- helpers
    def u(self, off, width):
        return int.from_bytes(self.data[off:off + width], "little")

    def field(self, off, width, kind, name, st=None):
        if 0 <= off and off + width <= len(self.data) and width > 0:
            self.fields.append(Field(off, width, kind, name, st))

    def addr(self, rel):
        """Absolute file offset of a relative address, or None if undefined."""
        if rel >= (1 << (8 * self.O)) - 1:
            return None
        a = self.base + rel
        return a if a < len(self.data) else None

    def once(self, kind, a):
        if a is None or (kind, a) in self._seen:
            return False
        self._seen.add((kind, a))
        return True

    def find_checksum_end(self, start, first=8):
        """The checksum offset of the structure at start: first e >= start+first
        with lookup3(data[start:e]) == u32(data[e:e+4])."""
        end = min(len(self.data) - 4, start + MAX_SEARCH)
        for e in range(start + first, end + 1):
            if lookup3(self.data[start:e]) == self.u(e, 4):
                return e
        return None

    # -- the walk
    def _parse(self):
        d = self.data
        s = 0
        while s < len(d) and d[s:s + 8] != SIG_SB:
            s = 512 if s == 0 else s * 2
        if s >= len(d):
            return
        self.sb = s
        self._superblock(s)
        for sig in CHECKSUMMED:
            i = d.find(sig)
            while i >= 0:
                self._signature(sig, i)
                i = d.find(sig, i + 1)
        for sig, fn in ((b"SNOD", self._snod), (b"HEAP", self._heap), (b"GCOL", self._gcol)):
            i = d.find(sig)
            while i >= 0:
                if self.once(sig, i):
                    try:
                        fn(i)
                    except (IndexError, ValueError, struct.error):
                        pass
                i = d.find(sig, i + 1)
        # v1 B-tree nodes last, root first: a chunk node's key size depends on the
        # dimensionality its dataset's layout message gives to the root, which
        # parsing a parent passes down to its children
        todo = []
        i = d.find(b"TREE")
        while i >= 0:
            todo.append(i)
            i = d.find(b"TREE", i + 1)
        while todo:
            left = []
            for i in todo:
                try:
                    if not self._btree1(i):
                        left.append(i)
                except (IndexError, ValueError, struct.error):
                    pass
            if len(left) == len(todo):
                break
            todo = left

    def _superblock(self, s):
        v = self.data[s + 8]
        self.field(s + 8, 1, "version", "sb.version")
        if v in (0, 1):
            self.O, self.L = self.data[s + 13], self.data[s + 14]
            O = self.O
            st = Struct("superblock", s, s + 24 + 4 * O + 40)
            self.structs.append(st)
            for off, w, k, n in ((9, 1, "version", "sb.freespace_version"), (10, 1, "version", "sb.root_version"),
                                 (13, 1, "size", "sb.sizeof_offsets"), (14, 1, "size", "sb.sizeof_lengths"),
                                 (16, 2, "count", "sb.group_leaf_k"), (18, 2, "count", "sb.group_internal_k"),
                                 (20, 4, "flags", "sb.flags")):
                self.field(s + off, w, k, n, st)
            p = s + 24
            if v == 1:
                self.field(p, 2, "count", "sb.istore_k", st)
                p += 4
            self.base = self.u(p, O)
            for i, n in enumerate(("base", "freespace", "eof", "driver")):
                self.field(p + i * O, O, "eof" if n == "eof" else "addr", "sb." + n, st)
            e = p + 4 * O  # the root group's symbol table entry
            self.field(e, O, "offset", "sb.root.name_offset", st)
            self.field(e + O, O, "addr", "sb.root.ohdr", st)
            self.field(e + 2 * O, 4, "enum", "sb.root.cache_type", st)
            self.field(e + 2 * O + 8, O, "addr", "sb.root.btree", st)
            self.field(e + 3 * O + 8, O, "addr", "sb.root.heap", st)
            self.structs[-1].end = e + 3 * O + 16
            self._ohdr(self.addr(self.u(e + O, O)))
        elif v in (2, 3):
            self.O, self.L = self.data[s + 9], self.data[s + 10]
            O = self.O
            csum = s + 12 + 4 * O
            st = Struct("superblock", s, csum + 4, csum)
            self.structs.append(st)
            self.field(s + 9, 1, "size", "sb.sizeof_offsets", st)
            self.field(s + 10, 1, "size", "sb.sizeof_lengths", st)
            self.field(s + 11, 1, "flags", "sb.flags", st)
            self.base = self.u(s + 12, O)
            for i, n in enumerate(("base", "ext", "eof", "root")):
                self.field(s + 12 + i * O, O, "eof" if n == "eof" else "addr", "sb." + n, st)
            self._ohdr(self.addr(self.u(s + 12 + 3 * O, O)))

    def _ohdr(self, a):
        if not self.once("ohdr", a):
            return
        try:
            if self.data[a:a + 4] == b"OHDR":
                self._ohdr2(a)
            elif self.data[a] == 1:
                self._ohdr1(a)
        except (IndexError, ValueError, struct.error):
            pass

    def _ohdr1(self, a):
        st = Struct("ohdr1", a, a + 16 + self.u(a + 8, 4))
        self.structs.append(st)
        self.field(a, 1, "version", "ohdr1.version", st)
        self.field(a + 2, 2, "count", "ohdr1.n_messages", st)
        self.field(a + 4, 4, "count", "ohdr1.refcount", st)
        self.field(a + 8, 4, "size", "ohdr1.size", st)
        self._messages1(a + 16, self.u(a + 8, 4), st)

    def _messages1(self, p, size, st):
        end = p + size
        while p + 8 <= end:
            t, n, fl = self.u(p, 2), self.u(p + 2, 2), self.data[p + 4]
            self.field(p, 2, "msgtype", "msg1.type", st)
            self.field(p + 2, 2, "size", "msg1.size", st)
            self.field(p + 4, 1, "flags", "msg1.flags", st)
            self._message(t, p + 8, n, fl, st, 1)
            p += 8 + n

    def _ohdr2(self, a):
        flags = self.data[a + 5]
        p = a + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        w = 1 << (flags & 3)
        size = self.u(p, w)
        start = p + w
        st = Struct("OHDR", a, start + size + 4, start + size)
        self.structs.append(st)
        self.field(a + 4, 1, "version", "ohdr2.version", st)
        self.field(a + 5, 1, "flags", "ohdr2.flags", st)
        self.field(p, w, "size", "ohdr2.chunk0_size", st)
        self._messages2(start, size, flags, st)

    def _messages2(self, p, size, oflags, st):
        end = p + size
        hdr = 6 if oflags & 0x04 else 4
        while p + hdr <= end:
            t, n, fl = self.data[p], self.u(p + 1, 2), self.data[p + 3]
            self.field(p, 1, "msgtype", "msg2.type", st)
            self.field(p + 1, 2, "size", "msg2.size", st)
            self.field(p + 3, 1, "flags", "msg2.flags", st)
            self._message(t, p + hdr, n, fl, st, 2, oflags)
            p += hdr + n

    def _message(self, t, d, n, mflags, st, ohv, oflags=0):
        O, L = self.O, self.L
        if n == 0 or mflags & 0x02:  # shared messages: a reference, not the message
            return
        try:
            if t == 0x1:
                self._dataspace(d, st)
            elif t == 0x3:
                self._datatype(d, n, st, "dtype")
            elif t == 0x4:
                self.field(d, 4, "size", "fill_old.size", st)
                self.field(d + 4, min(n - 4, 16), "bytes", "fill_old.value", st)
            elif t == 0x5:
                self._fill(d, n, st)
            elif t == 0x8:
                self._layout(d, n, st)
            elif t == 0xB:
                self._filters(d, n, st)
            elif t == 0x10:
                self.field(d, O, "addr", "cont.addr", st)
                self.field(d + O, L, "size", "cont.length", st)
                a, length = self.addr(self.u(d, O)), self.u(d + O, L)
                if a is not None and self.once("cont", a):
                    if ohv == 1:
                        self._messages1(a, length, Struct("cont1", a, a + length))
                    elif self.data[a:a + 4] == b"OCHK":
                        cst = Struct("OCHK", a, a + length, a + length - 4)
                        self.structs.append(cst)
                        self._messages2(a + 4, length - 8, oflags, cst)
            elif t == 0x11:
                self.field(d, O, "addr", "symtab.btree", st)
                self.field(d + O, O, "addr", "symtab.heap", st)
            elif t == 0x6:
                self._link(d, n, st)
        except (IndexError, ValueError, struct.error):
            pass

    def _dataspace(self, d, st):
        v, rank, flags = self.data[d], self.data[d + 1], self.data[d + 2]
        self.field(d, 1, "version", "space.version", st)
        self.field(d + 1, 1, "rank", "space.rank", st)
        self.field(d + 2, 1, "flags", "space.flags", st)
        p = d + 8 if v == 1 else d + 4
        if v == 2:
            self.field(d + 3, 1, "enum", "space.type", st)
        for i in range(rank):
            self.field(p + i * self.L, self.L, "dim", "space.dim%d" % i, st)
        if flags & 1:
            for i in range(rank):
                self.field(p + (rank + i) * self.L, self.L, "dim", "space.maxdim%d" % i, st)

    def _datatype(self, d, n, st, name, depth=0):
        cls = self.data[d] & 0x0F
        self.field(d, 1, "enum", name + ".class_version", st)
        self.field(d + 1, 3, "flags", name + ".bits", st)
        self.field(d + 4, 4, "size", name + ".size", st)
        if cls == 0:
            self.field(d + 8, 2, "offset", name + ".bit_offset", st)
            self.field(d + 10, 2, "size", name + ".precision", st)
        elif cls == 1:
            self.field(d + 8, 2, "offset", name + ".bit_offset", st)
            self.field(d + 10, 2, "size", name + ".precision", st)
            for i, f in enumerate(("exp_loc", "exp_size", "mant_loc", "mant_size")):
                self.field(d + 12 + i, 1, "size", "%s.%s" % (name, f), st)
            self.field(d + 16, 4, "count", name + ".exp_bias", st)
        elif n > 8:
            # compound, array, enum, vlen: their properties as bytes (member offsets, dims, base types)
            for off in range(d + 8, d + n, 4):
                self.field(off, min(4, d + n - off), "bytes", name + ".props", st)

    def _fill(self, d, n, st):
        v = self.data[d]
        self.field(d, 1, "version", "fill.version", st)
        if v in (1, 2):
            for i, f in enumerate(("alloc_time", "write_time", "defined")):
                self.field(d + 1 + i, 1, "enum", "fill." + f, st)
            if v == 1 or self.data[d + 3]:
                self.field(d + 4, 4, "size", "fill.size", st)
                self.field(d + 8, min(n - 8, 16), "bytes", "fill.value", st)
        elif v == 3:
            self.field(d + 1, 1, "flags", "fill.flags", st)
            if self.data[d + 1] & 0x20:
                self.field(d + 2, 4, "size", "fill.size", st)
                self.field(d + 6, min(n - 6, 16), "bytes", "fill.value", st)

    def _layout(self, d, n, st):
        O, L = self.O, self.L
        v, cls = self.data[d], self.data[d + 1]
        self.field(d, 1, "version", "layout.version", st)
        self.field(d + 1, 1, "enum", "layout.class", st)
        if v not in (3, 4):
            return
        if cls == 0:
            size = self.u(d + 2, 2)
            self.field(d + 2, 2, "size", "layout.compact_size", st)
            self.payloads.append((d + 4, size))
        elif cls == 1:
            self.field(d + 2, O, "addr", "layout.contig_addr", st)
            self.field(d + 2 + O, L, "size", "layout.contig_size", st)
            a = self.addr(self.u(d + 2, O))
            if a is not None:
                self.payloads.append((a, self.u(d + 2 + O, L)))
        elif cls == 2 and v == 3:
            nd = self.data[d + 2]
            self.field(d + 2, 1, "rank", "layout.ndims", st)
            self.field(d + 3, O, "addr", "layout.btree", st)
            for i in range(nd):
                self.field(d + 3 + O + 4 * i, 4, "dim", "layout.chunk_dim%d" % i, st)
            a = self.addr(self.u(d + 3, O))
            if a is not None:
                self._chunk_ndims[a] = nd
        elif cls == 2 and v == 4:
            flags, nd, w = self.data[d + 2], self.data[d + 3], self.data[d + 4]
            self.field(d + 2, 1, "flags", "layout.flags", st)
            self.field(d + 3, 1, "rank", "layout.ndims", st)
            self.field(d + 4, 1, "size", "layout.dim_width", st)
            p = d + 5
            for i in range(nd):
                self.field(p, w, "dim", "layout.chunk_dim%d" % i, st)
                p += w
            idx = self.data[p]
            self.field(p, 1, "enum", "layout.index_type", st)
            p += 1
            if idx == 1 and flags & 0x02:
                self.field(p, L, "size", "layout.single_filtered_size", st)
                self.field(p + L, 4, "flags", "layout.single_filter_mask", st)
                p += L + 4
            elif idx == 3:
                self.field(p, 1, "size", "layout.fa_page_bits", st)
                p += 1
            elif idx == 4:
                for i, f in enumerate(("max_bits", "idx_elmts", "min_ptrs", "min_elmts", "page_bits")):
                    self.field(p + i, 1, "size", "layout.ea_" + f, st)
                p += 5
            elif idx == 5:
                self.field(p, 4, "size", "layout.bt2_node_size", st)
                self.field(p + 4, 1, "count", "layout.bt2_split", st)
                self.field(p + 5, 1, "count", "layout.bt2_merge", st)
                p += 6
            self.field(p, O, "addr", "layout.index_addr", st)
            if idx in (1, 2):  # single chunk / implicit: the address is of chunk data
                a = self.addr(self.u(p, O))
                if a is not None:
                    self.payloads.append((a, min(4096, len(self.data) - a)))

    def _filters(self, d, n, st):
        v, nf = self.data[d], self.data[d + 1]
        self.field(d, 1, "version", "filters.version", st)
        self.field(d + 1, 1, "count", "filters.n", st)
        p = d + 8 if v == 1 else d + 2
        for i in range(nf):
            fid = self.u(p, 2)
            self.field(p, 2, "filter_id", "filter%d.id" % i, st)
            has_name = v == 1 or fid >= 256
            q = p + 2
            namelen = 0
            if has_name:
                namelen = self.u(q, 2)
                self.field(q, 2, "size", "filter%d.name_len" % i, st)
                q += 2
            self.field(q, 2, "flags", "filter%d.flags" % i, st)
            nv = self.u(q + 2, 2)
            self.field(q + 2, 2, "count", "filter%d.n_values" % i, st)
            q += 4
            if has_name:
                q += (namelen + 7) // 8 * 8 if v == 1 else namelen
            for k in range(nv):
                self.field(q + 4 * k, 4, "cd_value", "filter%d.cd%d" % (i, k), st)
            q += 4 * nv
            if v == 1 and nv % 2:
                q += 4
            p = q

    def _link(self, d, n, st):
        flags = self.data[d + 1]
        p = d + 2
        ltype = 0
        if flags & 0x08:
            ltype = self.data[p]
            p += 1
        if flags & 0x04:
            p += 8
        if flags & 0x10:
            p += 1
        w = 1 << (flags & 3)
        nl = self.u(p, w)
        self.field(p, w, "size", "link.name_len", st)
        p += w + nl
        if ltype == 0:
            self.field(p, self.O, "addr", "link.hard_addr", st)
            self._ohdr(self.addr(self.u(p, self.O)))
        else:
            self.field(p, 2, "size", "link.value_len", st)

    # -- signature-found structures
    def _signature(self, sig, a):
        if not self.once(sig, a):
            return
        O, L = self.O, self.L
        try:
            if sig == b"OHDR":
                self._ohdr(a)
                return
            if sig == b"OCHK":
                return  # reached through its continuation message, which gives its length
            csum = None
            fixed = {b"FAHD": 8 + L + O, b"EAHD": 12 + 6 * L + O, b"BTHD": 18 + O + L}
            if sig in fixed and lookup3(self.data[a:a + fixed[sig]]) == self.u(a + fixed[sig], 4):
                csum = a + fixed[sig]
            if csum is None:
                csum = self.find_checksum_end(a)
            if csum is None:
                return
            st = Struct(sig.decode(), a, csum + 4, csum)
            self.structs.append(st)
            name = sig.decode().lower()
            self.field(a + 4, 1, "version", name + ".version", st)
            self.field(a + 5, 1, "enum", name + ".client_or_type", st)
            if sig == b"FAHD":
                self.field(a + 6, 1, "size", "fahd.entry_size", st)
                self.field(a + 7, 1, "size", "fahd.page_bits", st)
                self.field(a + 8, L, "count", "fahd.max_entries", st)
                self.field(a + 8 + L, O, "addr", "fahd.dblk_addr", st)
            elif sig == b"EAHD":
                for i, f in enumerate(("elmt_size", "max_bits", "idx_elmts", "dblk_min_elmts",
                                       "sblk_min_ptrs", "page_bits")):
                    self.field(a + 6 + i, 1, "size", "eahd." + f, st)
                for i in range(6):
                    self.field(a + 12 + i * L, L, "count", "eahd.stat%d" % i, st)
                self.field(a + 12 + 6 * L, O, "addr", "eahd.iblk_addr", st)
            elif sig == b"BTHD":
                self.field(a + 6, 4, "size", "bthd.node_size", st)
                self.field(a + 10, 2, "size", "bthd.record_size", st)
                self.field(a + 12, 2, "level", "bthd.depth", st)
                self.field(a + 14, 1, "count", "bthd.split", st)
                self.field(a + 15, 1, "count", "bthd.merge", st)
                self.field(a + 16, O, "addr", "bthd.root", st)
                self.field(a + 16 + O, 2, "count", "bthd.root_nrecs", st)
                self.field(a + 18 + O, L, "count", "bthd.total_recs", st)
            else:
                # data blocks and nodes: a header address, then elements or records of
                # addresses, sizes, masks and scaled offsets: mutate them in 8- and 4-byte steps
                body = a + 6
                if sig in (b"FADB", b"EAIB", b"EASB", b"EADB"):
                    self.field(a + 6, O, "addr", name + ".header_addr", st)
                    body = a + 6 + O
                for off in range(body, csum, 4):
                    w = 8 if (off - body) % 8 == 0 and off + 8 <= csum else min(4, csum - off)
                    if w == 8 or (off - body) % 8:
                        self.field(off, w, "entry", name + ".entry", st)
        except (IndexError, ValueError, struct.error):
            pass

    def _btree1(self, a):
        O, L = self.O, self.L
        typ, level, n = self.data[a + 4], self.data[a + 5], self.u(a + 6, 2)
        nd = self._chunk_ndims.get(a)
        if typ == 1 and nd is None:
            return False  # not reached yet: its parent (or layout) tells its dimensionality
        ks = L if typ == 0 else 8 + 8 * nd
        st = Struct("TREE", a, a + 8 + 2 * O + (n + 1) * ks + n * O)
        self.structs.append(st)
        self.field(a + 4, 1, "enum", "tree.type", st)
        self.field(a + 5, 1, "level", "tree.level", st)
        self.field(a + 6, 2, "count", "tree.entries", st)
        self.field(a + 8, O, "addr", "tree.left", st)
        self.field(a + 8 + O, O, "addr", "tree.right", st)
        p = a + 8 + 2 * O
        for i in range(n + 1):
            if typ == 0:
                self.field(p, L, "offset", "tree.key%d.heap_offset" % i, st)
            else:
                self.field(p, 4, "size", "tree.key%d.chunk_size" % i, st)
                self.field(p + 4, 4, "flags", "tree.key%d.filter_mask" % i, st)
                for k in range(nd):
                    self.field(p + 8 + 8 * k, 8, "key", "tree.key%d.off%d" % (i, k), st)
            if i < n:
                child = p + ks
                self.field(child, O, "addr", "tree.child%d" % i, st)
                if typ == 1 and level == 0:
                    ca = self.addr(self.u(child, O))
                    if ca is not None:
                        self.payloads.append((ca, self.u(p, 4)))
                elif typ == 1:
                    ca = self.addr(self.u(child, O))
                    if ca is not None:
                        self._chunk_ndims.setdefault(ca, nd)
                p = child + O
        return True

    def _snod(self, a):
        O = self.O
        n = self.u(a + 6, 2)
        es = 2 * O + 24
        st = Struct("SNOD", a, a + 8 + n * es)
        self.structs.append(st)
        self.field(a + 4, 1, "version", "snod.version", st)
        self.field(a + 6, 2, "count", "snod.n_symbols", st)
        for i in range(n):
            e = a + 8 + i * es
            self.field(e, O, "offset", "snod%d.name_offset" % i, st)
            self.field(e + O, O, "addr", "snod%d.ohdr" % i, st)
            self.field(e + 2 * O, 4, "enum", "snod%d.cache_type" % i, st)
            self.field(e + 2 * O + 8, O, "addr", "snod%d.scratch_btree" % i, st)
            self.field(e + 3 * O + 8, O, "addr", "snod%d.scratch_heap" % i, st)
            self._ohdr(self.addr(self.u(e + O, O)))

    def _heap(self, a):
        O, L = self.O, self.L
        st = Struct("HEAP", a, a + 8 + 2 * L + O)
        self.structs.append(st)
        self.field(a + 4, 1, "version", "heap.version", st)
        self.field(a + 8, L, "size", "heap.data_size", st)
        self.field(a + 8 + L, L, "offset", "heap.free_list", st)
        self.field(a + 8 + 2 * L, O, "addr", "heap.data_addr", st)

    def _gcol(self, a):
        L = self.L
        size = self.u(a + 8, L)
        st = Struct("GCOL", a, a + size)
        self.structs.append(st)
        self.field(a + 4, 1, "version", "gcol.version", st)
        self.field(a + 8, L, "size", "gcol.size", st)
        p = a + 8 + L
        for _ in range(4096):
            if p + 8 + L > a + size:
                break
            idx, osize = self.u(p, 2), self.u(p + 8, L)
            self.field(p, 2, "count", "gobj.index", st)
            self.field(p + 2, 2, "count", "gobj.refcount", st)
            self.field(p + 8, L, "size", "gobj.size", st)
            if idx == 0:
                break
            self.payloads.append((p + 8 + L, osize))
            p += 8 + L + (osize + 7) // 8 * 8
