"""Data parallelism across processes, with ``torch.distributed``'s names, over MPI (mpi4py) or NCCL (CuPy).

One process per rank, started by an MPI launcher (``mpiexec -n 4 python train.py``, ``srun``):

    import minidl.distributed as dist
    dist.init_process_group("mpi")              # or "nccl": one GPU per rank
    dist.all_reduce(t, op="mean")               # in place, the same result on every rank

Rank and world size come from MPI.  Under "nccl" each rank takes GPU (its rank on the node mod the node's GPUs)
and an NCCL communicator is built through CuPy, rank 0's unique id broadcast by MPI, as ChainerMN does; CuPy
arrays then travel by NCCL on a stream of their own (ordered after the work queued before each call) and NumPy
arrays by MPI.  Under "mpi" NumPy arrays travel by MPI and CuPy arrays are staged through host memory.

Every collective must be called by every rank in the same order.  An uncaught exception on one rank after
``init_process_group`` prints its traceback and "rank R of N failed" and then aborts the job (MPI_Abort), so the
launcher exits non-zero instead of the other ranks waiting forever in their next collective.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time

from minidl import backend
from minidl.autograd import Tensor

INSTALL_HINT = ("install them with `pip install 'minidl[dist]'` (mpi4py, and MPICH with its mpiexec, from PyPI), "
                "or `pip install mpi4py` against an MPI library already on the machine (Open MPI, MPICH, Intel MPI)")
BACKENDS = ("mpi", "nccl")


class ReduceOp:
    """The reductions ``all_reduce`` knows (strings work too: 'sum', 'mean', 'max')."""
    SUM = "sum"
    MEAN = AVG = "mean"
    MAX = "max"


_OPS = ("sum", "mean", "max")


def is_available() -> bool:
    """Whether mpi4py is installed (without initialising MPI)."""
    return importlib.util.find_spec("mpi4py") is not None


def _import_mpi():
    try:
        from mpi4py import MPI
    except Exception as e:  # no mpi4py (ImportError), or mpi4py that finds no MPI library (RuntimeError)
        raise RuntimeError(f"minidl.distributed needs mpi4py and an MPI library, and {e}; {INSTALL_HINT}") from None
    return MPI


class Work:
    """A collective started with ``async_op=True``; ``wait()`` completes it (the array then holds the result)."""

    def __init__(self, finish):
        self._finish = finish

    def wait(self) -> bool:
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish()
        return True

    def is_completed(self) -> bool:
        return self._finish is None


def _mean_divider(a, size):
    def divide():
        a[...] /= a.dtype.type(size)
    return divide


class ProcessGroup:
    """All ranks of the job: collectives on C-contiguous arrays, in place.  ``init_process_group`` makes the one
    the module-level functions use; ``DistributedDataParallel`` and ``SyncBatchNorm`` call it directly."""

    def __init__(self, backend_name: str):
        MPI = _import_mpi()
        self.MPI = MPI
        self.backend = backend_name
        self.comm = MPI.COMM_WORLD.Dup()  # our own context: a user's traffic on COMM_WORLD never mixes with ours
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.nccl = None
        self.device_id = None
        if backend_name == "nccl":
            try:
                self._init_nccl()
            except BaseException:
                self.comm.Free()
                raise

    def _init_nccl(self):
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        local_rank, local_size = node.Get_rank(), node.Get_size()
        node.Free()
        try:
            cupy, nccl = backend.nccl()
            n_gpus = cupy.cuda.runtime.getDeviceCount()
        except RuntimeError as e:
            raise RuntimeError(f"init_process_group(backend='nccl'): {e}; or use backend='mpi'") from None
        if local_size > n_gpus:  # NCCL refuses two ranks on one GPU ("Duplicate GPU detected")
            raise RuntimeError(f"init_process_group(backend='nccl') needs one GPU per rank: {local_size} ranks on "
                               f"this node, {n_gpus} GPU(s) visible; start at most {n_gpus} ranks per node, or "
                               f"use backend='mpi'")
        self.device_id = local_rank
        cupy.cuda.Device(self.device_id).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self._cupy, self._nccl_module = cupy, nccl
        self.nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    # ------------------------------------------------------------ collectives on arrays
    def all_reduce(self, a, op: str = "sum", async_op: bool = False) -> Work:
        """Reduce ``a`` (C-contiguous) over the ranks, in place: 'sum', 'mean' or 'max'."""
        op = _check_op(op, a)
        finish = _mean_divider(a, self.size) if op == "mean" else None
        if backend.device_of(a) == "cuda":
            if self.nccl is not None:
                nccl = self._nccl_module
                code = nccl.NCCL_MAX if op == "max" else nccl.NCCL_SUM
                ptr, count, dtype = a.data.ptr, a.size, self._nccl_dtype(a)
                return self._on_nccl_stream(lambda s: self.nccl.allReduce(ptr, ptr, count, dtype, code, s), finish,
                                            async_op)
            host = backend.to_numpy(a)  # MPI on GPU data: staged through host memory
            self.comm.Allreduce(self.MPI.IN_PLACE, host.reshape(-1), op=self._mpi_op(op))
            a[...] = backend.to_device(host, "cuda")
            return _done(finish)
        buf = a.reshape(-1)
        if async_op:
            req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self._mpi_op(op))
            return Work(lambda: (req.Wait(), finish and finish()))
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self._mpi_op(op))
        return _done(finish)

    def broadcast(self, a, src: int = 0) -> Work:
        """Overwrite ``a`` (C-contiguous) on every rank with rank ``src``'s."""
        if not 0 <= src < self.size:
            raise ValueError(f"broadcast: src must be a rank in [0, {self.size}), got {src}")
        if backend.device_of(a) == "cuda":
            if self.nccl is not None:
                ptr, count, dtype = a.data.ptr, a.size, self._nccl_dtype(a)
                return self._on_nccl_stream(lambda s: self.nccl.bcast(ptr, count, dtype, src, s), None, False)
            host = backend.to_numpy(a)
            self.comm.Bcast(host.reshape(-1), root=src)
            a[...] = backend.to_device(host, "cuda")
            return _done(None)
        self.comm.Bcast(a.reshape(-1), root=src)
        return _done(None)

    def broadcast_object(self, obj, src: int = 0):
        """Rank ``src``'s picklable ``obj`` on every rank (host data: flags, paths, small dicts)."""
        return self.comm.bcast(obj, root=src)

    def all_gather_object(self, obj) -> list:
        """Every rank's picklable ``obj``, in rank order, on every rank."""
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()

    def destroy(self):
        if self.nccl is not None:
            self.stream.synchronize()
            self.nccl.destroy()
            self.nccl = None
        if self.comm is not None:
            self.comm.Free()
            self.comm = None

    # ------------------------------------------------------------ helpers
    def _mpi_op(self, op):
        return self.MPI.MAX if op == "max" else self.MPI.SUM

    def _nccl_dtype(self, a):
        nccl = self._nccl_module
        codes = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
                 "int8": nccl.NCCL_INT8, "uint8": nccl.NCCL_UINT8, "int32": nccl.NCCL_INT32,
                 "int64": nccl.NCCL_INT64}
        if a.dtype.name not in codes:
            raise TypeError(f"NCCL cannot reduce arrays of dtype {a.dtype}; expected one of {sorted(codes)}")
        return codes[a.dtype.name]

    def _on_nccl_stream(self, launch, finish, async_op):
        """Run an NCCL call on the group's stream after the work queued so far on the current stream; the
        current stream waits for it when the returned Work is waited on (at once unless ``async_op``).  One
        stream for every collective keeps them in the same order on every rank."""
        cupy = self._cupy
        current = cupy.cuda.get_current_stream()
        ready = cupy.cuda.Event(disable_timing=True)
        ready.record(current)
        self.stream.wait_event(ready)
        launch(self.stream.ptr)
        done = cupy.cuda.Event(disable_timing=True)
        done.record(self.stream)

        def complete():
            current.wait_event(done)
            if finish is not None:
                finish()
        work = Work(complete)
        if not async_op:
            work.wait()
        return work


def _done(finish) -> Work:
    if finish is not None:
        finish()
    return Work(None)


def _check_op(op, a):
    op = str(op).lower()
    if op not in _OPS:
        raise ValueError(f"all_reduce: op must be one of {_OPS}, got {op!r}")
    if op == "mean" and a.dtype.kind != "f":
        raise TypeError(f"all_reduce: op='mean' needs floating-point data, got dtype {a.dtype} (reduce with 'sum')")
    return op


# ---------------------------------------------------------------- launching
def mpiexec_command(nprocs: int, args) -> tuple[list, dict]:
    """``(argv, env)`` that start ``args`` (a list, e.g. ``[sys.executable, "-m", "experiments", ...]``) on
    ``nprocs`` ranks of this machine with the ``mpiexec`` beside this Python (the one ``pip install
    'minidl[dist]'`` puts in the venv) or else the first on PATH; ``env`` is os.environ plus what lets Open MPI
    run as root and start more ranks than cores (MPICH ignores it)."""
    exe = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.isfile(exe):
        exe = shutil.which("mpiexec")
    if exe is None:
        raise RuntimeError(f"no mpiexec found beside {sys.executable} or on PATH; {INSTALL_HINT}")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    return [exe, "-n", str(int(nprocs))] + [str(a) for a in args], env


# ---------------------------------------------------------------- the default group
_group: ProcessGroup | None = None
_previous_excepthook = None


def init_process_group(backend: str = "mpi") -> ProcessGroup:
    """Join this process to the job: rank and world size from the MPI launcher.  ``backend``: 'mpi' (any device;
    CPU clusters) or 'nccl' (one GPU per rank).  Call it once, on every rank, before any collective."""
    global _group, _previous_excepthook
    if backend not in BACKENDS:
        raise ValueError(f"init_process_group: backend must be one of {BACKENDS}, got {backend!r}")
    if _group is not None:
        raise RuntimeError("init_process_group: the default process group is already initialized "
                           "(call destroy_process_group() first)")
    _group = ProcessGroup(backend)
    _previous_excepthook = sys.excepthook
    sys.excepthook = _abort_on_uncaught_exception
    return _group


def _abort_on_uncaught_exception(etype, value, tb):
    group = _group
    (_previous_excepthook or sys.__excepthook__)(etype, value, tb)
    if group is None:
        return
    sys.stderr.write(f"minidl.distributed: rank {group.rank} of {group.size} failed ({etype.__name__}: {value}); "
                     f"aborting all {group.size} ranks\n")
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(0.3)  # the launcher forwards our output asynchronously; an immediate abort lost the traceback
    group.MPI.COMM_WORLD.Abort(1)


def destroy_process_group():
    """Leave the job's collectives (MPI itself is finalised by mpi4py when the process exits)."""
    global _group
    if _group is None:
        return
    group, _group = _group, None
    if sys.excepthook is _abort_on_uncaught_exception:
        sys.excepthook = _previous_excepthook
    group.destroy()


def is_initialized() -> bool:
    return _group is not None


def group() -> ProcessGroup:
    """The default process group (a RuntimeError before ``init_process_group``)."""
    if _group is None:
        raise RuntimeError("minidl.distributed: the default process group is not initialized; call "
                           "minidl.distributed.init_process_group('mpi') (or 'nccl') first, in a process started "
                           "by mpiexec")
    return _group


def get_rank() -> int:
    return group().rank


def get_world_size() -> int:
    return group().size


def get_backend() -> str:
    return group().backend


def barrier():
    group().barrier()


def _array_of(tensor, what):
    if isinstance(tensor, Tensor):
        return tensor.data
    if backend.is_array(tensor):
        return tensor
    raise TypeError(f"{what} expects a minidl Tensor (or a NumPy/CuPy array), got {type(tensor).__name__}")


def _in_place(tensor, what, call, async_op=False) -> Work:
    """Run ``call(array)`` on the tensor's data; data that is not C-contiguous goes through a contiguous copy."""
    a = _array_of(tensor, what)
    if hasattr(tensor, "_bump_version"):  # an in-place change, as PyTorch counts one
        tensor._bump_version()
    if a.flags.c_contiguous:
        return call(a)
    buf = backend.get_array_module(a).ascontiguousarray(a)
    work = call(buf)

    def write_back():
        work.wait()
        a[...] = buf
    if async_op:
        return Work(write_back)
    write_back()
    return Work(None)


def all_reduce(tensor, op: str = "sum", async_op: bool = False):
    """Reduce ``tensor`` over all ranks, in place ('sum', 'mean' or 'max'); with ``async_op`` a ``Work``."""
    work = _in_place(tensor, "all_reduce", lambda a: group().all_reduce(a, op, async_op), async_op)
    return work if async_op else None


def broadcast(tensor, src: int = 0):
    """Overwrite ``tensor`` on every rank with rank ``src``'s, in place."""
    _in_place(tensor, "broadcast", lambda a: group().broadcast(a, src))


def all_gather_object(object_list: list, obj):
    """Fill ``object_list`` (of world-size length, as PyTorch) with every rank's picklable ``obj``, in rank order."""
    gathered = group().all_gather_object(obj)
    if len(object_list) != len(gathered):
        raise ValueError(f"all_gather_object: object_list must have one entry per rank ({len(gathered)}), "
                         f"got {len(object_list)}")
    object_list[:] = gathered


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj``, on every rank."""
    return group().broadcast_object(obj, src)


__all__ = ["init_process_group", "destroy_process_group", "is_available", "is_initialized", "get_rank",
           "get_world_size", "get_backend", "barrier", "broadcast", "broadcast_object", "all_gather_object",
           "all_reduce", "ReduceOp", "ProcessGroup", "Work", "group", "mpiexec_command"]
