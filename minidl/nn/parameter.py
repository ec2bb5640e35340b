"""``Parameter``: a tensor that a ``Module`` learns (registered when assigned as an attribute)."""
from minidl.autograd import Tensor


class Parameter(Tensor):
    """A leaf ``Tensor`` with ``requires_grad=True`` by default.  Assigning one to a
    ``Module`` attribute registers it, so ``parameters()`` and ``state_dict()`` find it.
    ``Parameter(t)`` shares ``t``'s array (no copy) and its version counter."""

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = Tensor([])
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)
        if isinstance(data, Tensor):
            self._vc = data._vc  # the same memory: one version counter

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
