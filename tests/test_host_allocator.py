"""minidl's glibc malloc thresholds (minidl/backend.py, "host memory"): opt-in (``import minidl`` changes
nothing; backend.set_malloc_thresholds() and Trainer.fit set them), off on request, and what they are for:
freed blocks stay with the process, so the next step's blocks take no page faults.  Each case runs in a
fresh interpreter, since the setting is process-wide."""
import json
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the malloc thresholds are set only with glibc on Linux")

# Eight 20 MB arrays live at once, then freed together, three times over (a training step's pattern in
# small); prints the minor page faults of the third round and what minidl did to the allocator.
PATTERN = """
import json, resource, sys, numpy as np, minidl
if sys.argv[1] == "set":
    minidl.backend.set_malloc_thresholds()
def step():
    blocks = [np.ones(5 * 2**20, np.float32) for _ in range(8)]
    del blocks
step(); step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({"faults": faults, "allocator": minidl.backend.host_allocator}))
"""


def run_child(expect_ok=True, call="set", **env_extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "MINIDL_MALLOC")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["NUMPY_MADVISE_HUGEPAGE"] = "0"   # count 4 KB pages, not the odd transparent huge page
    env.update(env_extra)
    res = subprocess.run([sys.executable, "-c", PATTERN, call], capture_output=True, text=True, env=env, cwd=ROOT)
    if not expect_ok:
        return res
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@needs_glibc
def test_thresholds_set_on_request_keep_freed_blocks_and_import_alone_changes_nothing():
    from minidl import backend
    ours = run_child()
    assert ours["allocator"] == {"mmap_threshold": backend.MMAP_THRESHOLD, "trim_threshold": backend.TRIM_THRESHOLD}
    system = run_child(MINIDL_MALLOC="system")
    assert system["allocator"] == "left alone: MINIDL_MALLOC=system"
    imported = run_child(call="no")
    assert imported["allocator"] == "left alone: set_malloc_thresholds() was not called"
    assert imported["faults"] > 10000, imported
    # glibc's defaults hand the 160 MB back and fault it in again (40960 pages); minidl's keep it
    assert system["faults"] > 10000, system
    assert ours["faults"] < 0.05 * system["faults"], (ours, system)


@needs_glibc
def test_glibc_variables_set_by_the_user_are_respected():
    out = run_child(MALLOC_TRIM_THRESHOLD_="131072")
    assert out["allocator"] == "left alone: MALLOC_TRIM_THRESHOLD_ set in the environment"
    out = run_child(GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert out["allocator"] == "left alone: GLIBC_TUNABLES set in the environment"


def test_a_misspelt_choice_is_an_error_at_import():
    res = run_child(expect_ok=False, MINIDL_MALLOC="off")
    assert res.returncode != 0
    assert "MINIDL_MALLOC must be 'minidl'" in res.stderr and "got 'off'" in res.stderr
    assert run_child(MINIDL_MALLOC="minidl")["allocator"] != "left alone: MINIDL_MALLOC=system"


@pytest.mark.skipif(GLIBC, reason="checks the other C libraries; this one is glibc on Linux")
def test_other_c_libraries_are_left_alone():
    from minidl import backend
    assert backend.set_malloc_thresholds().startswith("left alone: the C library is not glibc")


def test_trainer_fit_sets_the_thresholds():
    code = ("import numpy as np, minidl\n"
            "from minidl import nn, optim\n"
            "from minidl.train import Trainer\n"
            "x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)\n"
            "model = nn.Linear(3, 2)\n"
            "Trainer(model, optim.SGD(model.parameters(), lr=0.1), [(x, y)], progress=False).fit(1)\n"
            "print(minidl.backend.host_allocator)")
    env = {k: v for k, v in os.environ.items() if k != "MINIDL_MALLOC"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "set_malloc_thresholds() was not called" not in res.stdout
