"""The numba decorator of the model kernels that allocate nothing.

Such a kernel is compiled without numba's reference counting (numba's ``_nrt=False`` option): with it, every call
increfs and decrefs each array argument (the cyclic model's net struct alone carries 18 arrays), about a third of
an evaluation's time on one intersection. The kernel must not allocate (no np.zeros, no array slicing that makes new
arrays it keeps) and must only see arrays its caller holds for the whole call. ``_nrt`` is an option numba keeps
for its own use; where a numba release does not have it, the decorator falls back to plain ``njit(cache=True)``:
the same results, only slower. ``GRONVAG_NUMBA_REFCOUNT=1`` in the environment forces that fallback (to rule the
option out when hunting a crash; give it its own NUMBA_CACHE_DIR, as the cache does not tell the two apart).
"""

from __future__ import annotations

import os

from numba import njit


def _has_nrt_option() -> bool:
    if os.environ.get("GRONVAG_NUMBA_REFCOUNT", "") not in ("", "0"):
        return False
    try:
        from numba.core.cpu import CPUTargetOptions
    except ImportError:  # pragma: no cover - another numba layout
        return False
    return hasattr(CPUTargetOptions, "_nrt")


NO_REFCOUNT = _has_nrt_option()
kernel_no_refcount = njit(cache=True, _nrt=False) if NO_REFCOUNT else njit(cache=True)
