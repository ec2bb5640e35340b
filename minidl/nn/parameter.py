"""``Parameter``: a tensor that a ``Module`` learns (registered when assigned as an attribute)."""
from minidl.autograd import Tensor


class Parameter(Tensor):
    """A leaf ``Tensor`` with ``requires_grad=True`` by default.  Assigning one to a
    ``Module`` attribute registers it, so ``parameters()`` and ``state_dict()`` find it.
    ``Parameter(t)`` shares ``t``'s array (no copy)."""

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = Tensor([])
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
