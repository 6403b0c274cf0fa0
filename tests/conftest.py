"""Fixtures shared by the Streamer tests: the generated file matrix."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import h5files  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long test, left out of the MULTILOAD_IO=pread pass")


@pytest.fixture(scope="session")
def h5dir():
    """Directory of this session's generated files (removed at exit)."""
    return h5files.session_files()[0]


@pytest.fixture(scope="session")
def files(h5dir):
    """{'matrix' | 'tables' | 'api' | 'bad': filename}"""
    return h5files.session_files()[1]


@pytest.fixture(scope="session")
def api_file(files):
    return files["api"]


@pytest.fixture(scope="session")
def bad_file(files):
    return files["bad"]


@pytest.fixture(scope="session")
def truth(files):
    """truth(case) -> the whole dataset as h5py reads it (cached)."""
    cache = {}

    def get(case):
        if case.name not in cache:
            cache[case.name] = h5files.read_truth(files, case)
        return cache[case.name]

    return get
