"""Batch inference of the supernet spread over worker processes, one intra-op thread each.

Dynamic execution runs every op of a cell on the images that chose it. At small widths and batch 64
that is about 13 images per op, too little work for oneDNN to split across two cores: a second
intra-op thread speeds dynamic execution up about 1.1x where masked execution, which runs five
64-image calls per cell, gains about 1.7x (``benchmarks/README.md``). Python threads don't help
either, because they take turns on the GIL between kernels. :class:`ProcessPool` uses the cores the
other way round: it cuts each batch into one contiguous share per worker process, and every worker
runs the whole forward pass on its share with its own intra-op thread(s).

    with ProcessPool(supernet, workers=2) as pool:
        logits = pool(images, masks)        # same as supernet(images, masks) in eval mode

The workers hold a snapshot of the weights taken when the pool is made: rebuild the pool after
training. Inputs and outputs pass through shared memory that grows with the largest batch seen, so
a call copies the images and masks once and sends only a share's size over a pipe. Workers are
started with ``spawn`` (safe with torch's thread pools). As always with ``spawn``, a script that
makes a pool must guard its entry point with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import copy
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np
import torch
import torch.multiprocessing as mp

from instanas_gym.model.supernet import ExecutionMode, Supernet, batch_masks, check_images
from instanas_gym.space.search_space import MASK_SHAPE
from instanas_gym.utils.checks import check_threads
from instanas_gym.utils.runtime import tune_allocator


@dataclass
class _Buffers:
    """Shared-memory tensors of one worker: inputs (images, masks) and its output (logits)."""

    images: torch.Tensor
    masks: torch.Tensor
    logits: torch.Tensor


def _serve(model: Supernet, conn: Connection, threads: int) -> None:
    """Worker loop: on ``(n, buffers or None)`` run the model on the first ``n`` rows; ``None`` stops."""
    torch.set_num_threads(threads)
    tune_allocator()
    model.eval()
    buffers: _Buffers | None = None
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        n, new_buffers = message
        buffers = new_buffers or buffers
        try:
            with torch.inference_mode():
                buffers.logits[:n].copy_(model(buffers.images[:n], buffers.masks[:n]))
            conn.send(None)
        except Exception:  # reported to the caller, who raises it
            conn.send(traceback.format_exc())


def _shutdown(processes: list, conns: list[Connection]) -> None:
    for conn in conns:
        try:
            conn.send(None)
        except (BrokenPipeError, OSError):
            pass
    for p in processes:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
    for conn in conns:
        conn.close()


class ProcessPool:
    """Eval-mode forward passes of a supernet on ``workers`` processes (see the module docstring).

    Args:
        model: the supernet (or its :func:`~instanas_gym.model.batchnorm.fold_batchnorm` copy); copied,
            so later changes to it don't reach the workers.
        workers: processes; each call splits the batch into this many contiguous shares (fewer when
            the batch is smaller).
        threads: intra-op threads per worker (1 gives each worker one core on a machine with
            ``workers`` cores).
        mode: execution mode the workers run (default: the model's own).
    """

    def __init__(
        self, model: Supernet, workers: int = 2, threads: int = 1, mode: ExecutionMode | None = None
    ) -> None:
        check_threads("workers", workers)  # processes, one core each at the least
        check_threads("threads", threads)
        snapshot = copy.deepcopy(model).eval()
        if mode is not None:
            snapshot.mode = mode
        snapshot.share_memory()
        self.space = snapshot.space
        self.mode: ExecutionMode = snapshot.mode
        self.workers = workers
        self._num_classes = snapshot.classifier.out_features
        ctx = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes = []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_serve, args=(snapshot, child, threads), daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(p)
        self._buffers: list[_Buffers | None] = [None] * workers
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._conns)

    def _buffers_for(self, worker: int, images: torch.Tensor) -> _Buffers | None:
        """New shared buffers for ``worker`` if its current ones can't hold ``images``, else None."""
        old = self._buffers[worker]
        n = images.shape[0]
        if old is not None and old.images.dtype == images.dtype and old.images.shape[1:] == images.shape[1:] \
                and old.images.shape[0] >= n:
            return None
        rows = max(n, 0 if old is None else old.images.shape[0])
        new = _Buffers(
            torch.empty((rows, *images.shape[1:]), dtype=images.dtype).share_memory_(),
            torch.empty((rows, *MASK_SHAPE), dtype=torch.bool).share_memory_(),
            torch.empty((rows, self._num_classes)).share_memory_(),
        )
        self._buffers[worker] = new
        return new

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Logits (B, num_classes) for images (B, C, H, W) under masks (17, 5) or (B, 17, 5)."""
        if not self._finalizer.alive:
            raise RuntimeError("this ProcessPool is closed")
        check_images(images, self.space.in_channels)
        batch = images.shape[0]
        m = batch_masks(masks, batch)
        images = images.cpu()
        bounds = np.linspace(0, batch, min(self.workers, batch) + 1).round().astype(int)
        shares = list(zip(bounds[:-1], bounds[1:]))
        for w, (start, end) in enumerate(shares):
            new = self._buffers_for(w, images[start:end])
            buf = self._buffers[w]
            buf.images[: end - start].copy_(images[start:end])
            buf.masks[: end - start].copy_(m[start:end])
            self._conns[w].send((end - start, new))
        errors = []
        for w in range(len(shares)):
            try:
                reply = self._conns[w].recv()
            except EOFError:
                reply = f"worker {w} (pid {self._processes[w].pid}) died"
            if reply is not None:
                errors.append(reply)
        if errors:
            raise RuntimeError("ProcessPool worker failed:\n" + "\n".join(errors))
        return torch.cat([self._buffers[w].logits[: end - start] for w, (start, end) in enumerate(shares)])

    def close(self) -> None:
        """Stop the workers (also done when the pool is garbage-collected or the interpreter exits)."""
        self._finalizer()

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
