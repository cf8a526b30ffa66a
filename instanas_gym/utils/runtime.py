"""Process-wide settings that make CPU inference of the supernet fast.

oneDNN, torch's CPU convolution library, caches one compiled kernel ("primitive") per layer and
input shape, 1,024 of them by default. Dynamic execution runs each op on the images that chose it,
so a batch of 64 with fresh masks every step asks for up to 64 sub-batch sizes x 255 convolutions:
the default cache thrashes and every step recompiles kernels (native vector env: 689 steps/s with
fresh random masks vs 1,025 when the masks repeat). Importing ``instanas_gym`` raises the capacity to
:data:`ONEDNN_CACHE_CAPACITY` unless ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is already set; oneDNN reads
it at its first convolution, so import the package before running any.

glibc's malloc hands every freed block above its mmap threshold back to the operating system, so a
supernet pass that allocates and frees activation tensors pays page faults on every call. Raising
the mmap and trim thresholds keeps that memory in the process: on this project's 2-core machine the
batch-64 forward pass ran 2.2x faster (``benchmarks/bench_supernet.py``). Preloading tcmalloc
(``LD_PRELOAD=libtcmalloc_minimal.so.4``) does the same and a little more.

Set ``INSTANAS_TUNE_MALLOC=0`` to leave the allocator alone.

A server that decodes a large image now and then wants the opposite: :func:`release_memory` hands
the memory freed since back to the operating system (glibc's ``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Largest freed block (bytes) kept in a heap rather than unmapped: glibc's maximum, 32 MiB on 64-bit.
MMAP_THRESHOLD_BYTES = 32 << 20
#: Free memory (bytes) at the top of the heap before glibc returns it to the OS.
TRIM_THRESHOLD_BYTES = 1 << 30

#: Primitives oneDNN keeps (its default: 1,024).
ONEDNN_CACHE_CAPACITY = 16384

_tuned: bool | None = None


def enlarge_onednn_cache() -> None:
    """Set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` to :data:`ONEDNN_CACHE_CAPACITY` unless the user set it."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))


def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True if glibc took the settings.

    A no-op (returns False) on other C libraries, under ``INSTANAS_TUNE_MALLOC=0``, or when another
    allocator (e.g. tcmalloc) is preloaded: it then owns ``malloc`` and ignores ``mallopt``.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("INSTANAS_TUNE_MALLOC", "1") == "0" or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return _tuned
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return _tuned
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    return _tuned


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def release_memory() -> bool:
    """Return the heap's free memory to the operating system; True if glibc did (a no-op elsewhere)."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    return bool(trim(0)) if trim is not None else False


def allocator() -> str:
    """Which allocator setting this process runs with: "tcmalloc", "glibc-tuned" or "default"."""
    if "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return "tcmalloc"
    return "glibc-tuned" if _tuned else "default"


def session_options(threads: int) -> onnxruntime.SessionOptions:
    """ONNX Runtime settings of every session: ``threads`` intra-op threads (at most the cores this
    process may use), one inter-op, sequential: the deployed engine's, so tables time what it runs."""
    import onnxruntime as ort

    from instanas_gym.utils.checks import check_threads

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = check_threads("threads", threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts
