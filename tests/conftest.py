import os

import pytest

from minidl import backend, kernels

if os.environ.get("MINIDL_FAKE_CUPY") == "1":  # the CuPy stand-in of tests/fake_cupy.py: GPU code paths on the CPU
    from tests import fake_cupy
    fake_cupy.install()


def pytest_report_header(config):
    why = backend.cupy_status()
    return f"minidl backends: numpy{'' if why else ', cupy'}" + (f" (cupy tests skip: {why})" if why else "")


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Run a test on each backend: NumPy always, CuPy where a GPU is present (skipped, saying why, where not)."""
    if request.param == "cuda":
        why = backend.cupy_status()
        if why:
            pytest.skip(f"CuPy backend not available: {why}")
    return request.param


@pytest.fixture(params=["fast", "reference"])
def ops_mode(request):
    """Run a test with the ops on their fast kernels and on their textbook references (minidl.set_ops)."""
    kernels.set_ops(request.param)
    yield request.param
    kernels.set_ops(os.environ.get("MINIDL_OPS", "fast"))
