"""Find the C libraries the core builds with: one probe for setup.py (the
extension) and the Makefile (C tests, fuzz and sanitizer builds), so both
compile the same codecs with the same ML_HAVE_* flags.

Required: HDF5 (pkg-config hdf5 or hdf5-serial, or HDF5_DIR pointing at an
installation prefix, as h5py finds it) and liburing. Optional: libdeflate
(else zlib, slower), c-blosc, liblzf, libzstd, liblz4 and libbz2 (bitshuffle
needs lz4 and zstd both); each one found adds its ML_HAVE_*
macro, and a missing one leaves its row of the codec table (src/codec.c)
unavailable, so its filter reads through HDF5 if HDF5 can.

    python3 probe_libs.py --cflags   # -DML_HAVE_... -I... (stdout)
    python3 probe_libs.py --libs     # -L... -l...
Notes about optional libraries go to stderr; a missing required one exits 1
with a message naming it.
"""
import os
import shlex
import subprocess
import sys

# (pkg-config name, macro, what to call it): the optional codec libraries.
OPTIONAL = (("blosc", "ML_HAVE_BLOSC", "c-blosc"), ("liblzf", "ML_HAVE_LZF", "liblzf"),
            ("libzstd", "ML_HAVE_ZSTD", "libzstd"), ("liblz4", "ML_HAVE_LZ4", "liblz4"))
# Libraries without a pkg-config file on Debian: (header, -l name, macro, what to call it), found by compiling.
OPTIONAL_NO_PC = (("bzlib.h", "bz2", "ML_HAVE_BZIP2", "libbz2"),)


def compiles(header, lib):
    """True if a program including header links with -l<lib>."""
    import tempfile
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.c")
        with open(src, "w") as f:
            f.write(f"#include <stdio.h>\n#include <{header}>\nint main(void) {{ return 0; }}\n")
        try:
            return subprocess.run([cc, src, "-o", os.path.join(d, "t"), f"-l{lib}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0
        except OSError:
            return False


def pkg_config(*names):
    """Return (cflags, libs) for the first pkg-config name that exists, or None."""
    for name in names:
        try:
            cflags = subprocess.check_output(["pkg-config", "--cflags", name], stderr=subprocess.DEVNULL)
            libs = subprocess.check_output(["pkg-config", "--libs", name], stderr=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError):
            continue
        return shlex.split(cflags.decode()), shlex.split(libs.decode())
    return None


class Missing(Exception):
    """A required library is not there; the message says what to install."""


def probe():
    """Return (cflags, libs, macros, notes): compiler flags, linker flags,
    [(macro, "1")] for the optional libraries found, and a note for each
    one missing. Raises Missing when HDF5 or liburing is not found."""
    cflags, libs, macros, notes = [], [], [], []
    if os.environ.get("HDF5_DIR"):
        d = os.environ["HDF5_DIR"]
        cflags += [f"-I{d}/include"]
        libs += [f"-L{d}/lib", f"-Wl,-rpath,{d}/lib", "-lhdf5"]
    else:
        found = pkg_config("hdf5", "hdf5-serial")
        if found is None:
            raise Missing("cannot find HDF5 (pkg-config hdf5 / hdf5-serial). "
                          "Install libhdf5-dev (Debian/Ubuntu) or set HDF5_DIR.")
        cflags += found[0]
        libs += found[1]
    found = pkg_config("liburing")
    if found is None:
        raise Missing("cannot find liburing (pkg-config liburing). Install liburing-dev (Debian/Ubuntu).")
    cflags += found[0]
    libs += found[1]
    found = pkg_config("libdeflate")
    if found:
        cflags += found[0]
        libs += found[1]
        macros.append(("ML_HAVE_LIBDEFLATE", "1"))
    else:
        notes.append("libdeflate not found, decoding deflate with zlib (slower)")
        libs += ["-lz"]
    for pc, macro, lib in OPTIONAL:
        found = pkg_config(pc)
        if found:
            cflags += found[0]
            libs += found[1]
            macros.append((macro, "1"))
        else:
            notes.append(f"{lib} not found, that filter reads through HDF5 if it can")
    for header, name, macro, lib in OPTIONAL_NO_PC:
        if compiles(header, name):
            libs += [f"-l{name}"]
            macros.append((macro, "1"))
        else:
            notes.append(f"{lib} not found, that filter reads through HDF5 if it can")
    return cflags, libs, macros, notes


def main(argv):
    if len(argv) != 2 or argv[1] not in ("--cflags", "--libs"):
        sys.exit("usage: probe_libs.py --cflags | --libs")
    try:
        cflags, libs, macros, notes = probe()
    except Missing as e:
        sys.exit(f"multiload: {e}")
    if argv[1] == "--cflags":
        for n in notes:
            print(f"multiload: {n}", file=sys.stderr)
        print(" ".join([f"-D{m}={v}" for m, v in macros] + cflags))
    else:
        print(" ".join(libs))


if __name__ == "__main__":
    main(sys.argv)
