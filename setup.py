"""Build multiload._core from src/ with flags from pkg-config.

probe_libs.py finds the libraries (HDF5 the way h5py finds it: pkg-config,
where Debian names the file hdf5-serial, or HDF5_DIR pointing at an
installation prefix) and the optional codecs' ML_HAVE_* macros; the
Makefile's C builds use the same probe.
"""
import os
import shlex
import sys
from glob import glob

import numpy
from setuptools import Extension, setup


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe_libs  # noqa: E402  (beside this file; the Makefile runs the same probe)

try:
    cflags, libs, macros, notes = probe_libs.probe()
except probe_libs.Missing as e:
    sys.exit(f"multiload: {e}")
for note in notes:
    print(f"multiload: {note}", file=sys.stderr)

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
