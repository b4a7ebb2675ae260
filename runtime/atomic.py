"""Atomic counters for compiled kernels whose threads share blocks of work.

In: a C-contiguous int64 array of counters and an index into it. Out: take() adds 1 to a
counter and returns the value it had, load() reads one; both atomic and sequentially
consistent, inlined into the calling Numba kernel as one LLVM instruction each.

Why: the fused operator kernels let every thread take the next block of points from one
counter until none is left, so a thread that starts late (a pool thread wakes about 0.1 ms
after the caller) takes fewer blocks instead of finishing last; and a thread that has no
block left waits for the others' `finished` count in compiled code, instead of sleeping on a
lock that takes as long again to wake it. A counter written with take() publishes everything
the thread wrote before it to every thread that load()s the new value.
"""
from __future__ import annotations

from numba.core import cgutils, types
from numba.extending import intrinsic


def _counter(counters, index) -> bool:
    return (isinstance(counters, types.Array) and counters.dtype == types.int64 and counters.ndim == 1
            and isinstance(index, types.Integer))


def _address(context, builder, signature, args):
    """The LLVM pointer to counters[index] of an intrinsic's (counters, index) arguments."""
    array_type, index_type = signature.args
    array = context.make_array(array_type)(context, builder, args[0])
    index = context.cast(builder, args[1], index_type, types.intp)
    return cgutils.get_item_pointer(context, builder, array_type, array, [index])


@intrinsic
def take(typingctx, counters, index):
    """counters[index] += 1, atomically; the value before."""
    if not _counter(counters, index):
        return None

    def codegen(context, builder, signature, args):
        one = context.get_constant(types.int64, 1)
        return builder.atomic_rmw("add", _address(context, builder, signature, args), one, "seq_cst")

    return types.int64(counters, index), codegen


@intrinsic
def load(typingctx, counters, index):
    """counters[index], read atomically."""
    if not _counter(counters, index):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_address(context, builder, signature, args), "seq_cst", 8)

    return types.int64(counters, index), codegen
