"""The asyncio test legs: the `run` fixture runs a coroutine on asyncio's
own loop or on uvloop (each test that takes `run` runs on both). Import
it into a test module: ``from aio_loops import run  # noqa: F401``."""
import asyncio

import pytest


def _new_uvloop():
    uvloop = pytest.importorskip("uvloop")  # `make test` installs it: the skip never happens there
    return uvloop.new_event_loop()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """run(coro) on the loop kind of this leg; returns its result."""
    factory = _new_uvloop if request.param == "uvloop" else asyncio.new_event_loop
    if request.param == "uvloop":
        factory()  # import check (skips the leg if uvloop is missing)

    def _run(coro):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    _run.kind = request.param
    _run.factory = factory
    return _run
