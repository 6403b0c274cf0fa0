"""Build multiload._core from src/ with flags from pkg-config.

HDF5 is found the way h5py finds it: pkg-config (Debian names the file
hdf5-serial), or HDF5_DIR pointing at an installation prefix.
"""
import os
import shlex
import subprocess
import sys
from glob import glob

import numpy
from setuptools import Extension, setup


def pkg_config(*names):
    """Return (cflags, libs) for the first pkg-config name that exists."""
    for name in names:
        try:
            cflags = subprocess.check_output(["pkg-config", "--cflags", name], stderr=subprocess.DEVNULL)
            libs = subprocess.check_output(["pkg-config", "--libs", name], stderr=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError):
            continue
        return shlex.split(cflags.decode()), shlex.split(libs.decode())
    return None


def require(what, *names, hint):
    found = pkg_config(*names)
    if found is None:
        sys.exit(f"multiload: cannot find {what} (pkg-config {' / '.join(names)}). {hint}")
    return found


cflags, libs, macros = [], [], []
if os.environ.get("HDF5_DIR"):
    d = os.environ["HDF5_DIR"]
    cflags += [f"-I{d}/include"]
    libs += [f"-L{d}/lib", f"-Wl,-rpath,{d}/lib", "-lhdf5"]
else:
    c, l = require("HDF5", "hdf5", "hdf5-serial",
                   hint="Install libhdf5-dev (Debian/Ubuntu) or set HDF5_DIR.")
    cflags += c
    libs += l
c, l = require("liburing", "liburing", hint="Install liburing-dev (Debian/Ubuntu).")
cflags += c
libs += l
deflate = pkg_config("libdeflate")
if deflate:
    cflags += deflate[0]
    libs += deflate[1]
    macros.append(("ML_HAVE_LIBDEFLATE", "1"))
else:
    print("multiload: libdeflate not found, decoding deflate with zlib (slower)", file=sys.stderr)
    libs += ["-lz"]

# Optional native decoders for PyTables' blosc and h5py's lzf filters.
for pc, macro, lib in (("blosc", "ML_HAVE_BLOSC", "c-blosc"), ("liblzf", "ML_HAVE_LZF", "liblzf")):
    found = pkg_config(pc)
    if found:
        cflags += found[0]
        libs += found[1]
        macros.append((macro, "1"))
    else:
        print(f"multiload: {lib} not found, that filter reads through HDF5 if it can", file=sys.stderr)

extra = os.environ.get("MULTILOAD_CFLAGS", "")
sources = sorted(glob("src/*.c")) + sorted(glob("src/python/*.c"))
setup(
    ext_modules=[
        Extension(
            "multiload._core",
            sources=sources,
            depends=sorted(glob("src/*.h")) + sorted(glob("src/python/*.h")),
            include_dirs=[numpy.get_include()],
            define_macros=macros,
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
                                "-Wno-missing-field-initializers", "-fvisibility=hidden"]
            + cflags + shlex.split(extra),
            extra_link_args=libs + ["-lpthread"] + shlex.split(os.environ.get("MULTILOAD_LDFLAGS", "")),
        )
    ]
)
