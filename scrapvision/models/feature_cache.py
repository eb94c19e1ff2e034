"""Memoise a frozen module's output per input image, so a linear probe pays for its backbone once.

A probe's backbone is frozen and stays in eval mode, so it is a pure function of its input: with the
probe recipe (no augmentation) every epoch feeds it the same photos again, and on a CPU that forward is
nearly all of an epoch's time. :class:`FrozenFeatureCache` keys each image by a digest of its bytes and
keeps the module's (small, pooled) output, so epochs after the first cost only the linear layer.

It is only a cache, never a different answer:
- a weight change (``load_state_dict``, ``.to()``, an in-place edit) changes the weights' stamp and empties
  it, and a module with any trainable parameter is never cached;
- tracing, ONNX export and ``torch.compile`` bypass it, so exported graphs hold the real backbone;
- inputs off the CPU bypass it (a GPU runs the frozen forward faster than the copy a digest would need);
- it is bounded (least recently used entries go first), so augmented views that never repeat cost only the
  digest (about 1 ms per 224 px image, against about 35 ms for tinynet_e's forward on one core).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

#: default bound, in stored floats (64 M floats = 256 MiB): 270,000 photos of tinynet_e's 240 pooled values
DEFAULT_MAX_FLOATS = 64 * 1024 * 1024


def _tracing() -> bool:
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch >= 2.6; 2.5 traces through dynamo
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
                or exporting())


class FrozenFeatureCache:
    """``cache(module, fn, x)`` returns ``fn(x)`` for a batch ``x`` ([B, ...]), row by row from the cache
    where it can. ``fn`` must run ``module`` (frozen, in eval mode) and return one [B, D] tensor whose
    rows depend only on the matching input rows."""

    def __init__(self, max_floats: int = DEFAULT_MAX_FLOATS) -> None:
        self.max_floats = max_floats
        self.rows: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.stamp: tuple | None = None
        self.floats = 0
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self.rows.clear()
        self.floats = 0

    def usable(self, module: nn.Module, x: torch.Tensor) -> bool:
        if _tracing() or module.training or x.device.type != "cpu" or x.requires_grad:
            return False
        tensors = [*module.parameters(), *module.buffers()]
        if any(t.requires_grad for t in tensors):
            return False
        # where the weights live and a sum per tensor: catches load_state_dict, .to() and in-place edits,
        # including ones through .data, which leave a tensor's version counter alone (about 1 ms for tinynet_e)
        with torch.no_grad():
            stamp = (tuple((t.data_ptr(), t.dtype) for t in tensors),
                     torch.stack([t.double().sum() for t in tensors]) if tensors else None)
        if self.stamp is None or stamp[0] != self.stamp[0] or not torch.equal(stamp[1], self.stamp[1]):
            self.clear()  # new or changed weights: every stored row is stale
            self.stamp = stamp
        return True

    def __call__(self, module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if not self.usable(module, x):
            return fn(x)
        flat = x.detach().contiguous().reshape(len(x), -1)
        head = f"{x.dtype}{tuple(x.shape[1:])}".encode()
        keys = [hashlib.blake2b(head + row.numpy().tobytes(), digest_size=16).digest() for row in flat]
        found = {key: self.rows[key] for key in keys if key in self.rows}
        missing = [i for i, key in enumerate(keys) if key not in found]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                fresh = fn(x[missing] if len(missing) < len(x) else x).detach()
            for i, row in zip(missing, fresh):
                found[keys[i]] = row.clone()
                self._store(keys[i], found[keys[i]])
        for key in found:
            if key in self.rows:
                self.rows.move_to_end(key)
        return torch.stack([found[key] for key in keys])

    def _store(self, key: bytes, row: torch.Tensor) -> None:
        self.rows[key] = row
        self.floats += row.numel()
        while self.floats > self.max_floats and self.rows:
            _, old = self.rows.popitem(last=False)
            self.floats -= old.numel()
