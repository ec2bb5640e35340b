"""Gradient-check cases for minidl/ops/sync_batch_norm.py in one process.

The op sums its statistics over the ranks through the ``reduce`` it is given.  Here ``reduce`` is the identity
(one rank: the op is batch_norm) or doubles its argument, which is what two ranks holding identical shares would
sum: the whole batch [x; x] has x's mean and variance, so y and every gradient equal batch_norm's on x, while
the count M and every reduced sum are twice the local ones (a count or a sum left unreduced shows).  The
multi-rank checks against BatchNorm on the whole batch run under mpiexec (tests/test_distributed.py).
"""
from minidl.ops.sync_batch_norm import SyncBatchNorm
from tests.cases_nn import bn_inputs, ref_batch_norm
from tests.gradcases import Case


def one_rank(a):
    return a


def two_equal_ranks(a):
    a *= 2
    return a


def sync_bn_case(id, shape, reduce, eps=1e-5):
    return Case("sync_batch_norm", id, lambda x, g, b: SyncBatchNorm(reduce, eps)(x, g, b), bn_inputs(shape),
                lambda x, g, b: ref_batch_norm(x, g, b, eps), check=dict(atol=1e-5))


CASES = [
    sync_bn_case("one-rank-NC", (8, 3), one_rank),
    sync_bn_case("one-rank-NCHW", (3, 4, 5, 2), one_rank),
    sync_bn_case("two-equal-ranks-NCL", (4, 3, 5), two_equal_ranks),
    sync_bn_case("two-equal-ranks-NCHW-eps0.1", (2, 3, 2, 2), two_equal_ranks, eps=0.1),
]
