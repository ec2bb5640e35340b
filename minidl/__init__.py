"""minidl: a deep-learning framework written from scratch on NumPy, with CuPy for the GPU."""
from minidl import backend
from minidl.autograd import (OP_REGISTRY, Function, Tensor, enable_grad, float32, float64, from_numpy,
                             get_default_dtype, int64, is_grad_enabled, no_grad, set_default_dtype, tensor)
from minidl.backend import get_array_module, is_cuda_available, manual_seed
from minidl.gradcheck import GradcheckError, gradcheck
from minidl.kernels import get_ops, set_ops
from minidl.ops import (abs, cat, clamp, clip, concatenate, cross_entropy, exp, flatten, leaky_relu, log,
                        log_softmax, matmul, max, mean, min, mse_loss, nll_loss, permute, relu, reshape, sigmoid,
                        softmax, sqrt, squeeze, stack, sum, tanh, transpose, unsqueeze, var)

__version__ = "0.1.0"


def _factory(xp_fn):
    def make(*shape, dtype=None, device="cpu", requires_grad=False):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        xp = backend.xp_for(device)
        return Tensor(xp_fn(xp)(shape, dtype=dtype or get_default_dtype()), requires_grad=requires_grad)
    return make


zeros = _factory(lambda xp: xp.zeros)
ones = _factory(lambda xp: xp.ones)


def randn(*shape, dtype=None, device="cpu", requires_grad=False):
    """Standard normal samples from minidl's seeded generator."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    gen = backend.default_generator(backend.xp_for(device))
    return Tensor(gen.standard_normal(shape, dtype=dtype or get_default_dtype()), requires_grad=requires_grad)


def rand(*shape, dtype=None, device="cpu", requires_grad=False):
    """Uniform samples in [0, 1) from minidl's seeded generator."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    gen = backend.default_generator(backend.xp_for(device))
    return Tensor(gen.random(shape, dtype=dtype or get_default_dtype()), requires_grad=requires_grad)

from minidl import data, io, nn, optim  # noqa: E402  (the layers above the engine)
from minidl.io import load_checkpoint, save_checkpoint  # noqa: E402
