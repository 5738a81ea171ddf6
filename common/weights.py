"""A policy's weights where they lie on disk, read a few rows at a time: how FSDP2 loads a model within its sharded
footprint (common/distributed.py `shard`).

Under `--dist fsdp2` the scripts build the policy on the meta device (no weight is allocated: `load_model(...,
policy_on_meta=True)`), shard it, and only then fill each rank's shard from the files: rank r reads rows
[r·⌈n/W⌉, (r+1)·⌈n/W⌉) of every parameter (FSDP2 shards dimension 0 as `torch.chunk` does) straight from the
safetensors file, so no rank ever holds a whole copy of the model, on the GPU or the CPU. The reference model is
built the same way (a copy of the meta policy, which holds no data, filled from the same files).

`Weights` maps each policy parameter name (its state-dict key) to where it is stored:
- a safetensors file and the key in it (the toy format, Janus-Pro's transformers shards): only the requested rows
  are read (`safe_open(...).get_slice`);
- a state dict of tensors (official LlamaGen `.pt` files, opened with `torch.load(mmap=True)`: the tensors are
  pages of the file mapped into memory, and slicing touches only those rows).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class Weights:
    """name -> (file, key) for safetensors, or name -> tensor (memory-mapped). `rows(name, start, stop)` reads
    rows start..stop of dimension 0; `shape(name)` needs no read."""

    def __init__(self, files: dict[str, tuple[str, str]] | None = None, tensors: dict[str, torch.Tensor] | None = None):
        self.files, self.tensors = files or {}, tensors or {}
        self._open: dict[str, object] = {}

    @classmethod
    def from_safetensors(cls, path: str, prefix: str = "", names=None) -> "Weights":
        """Every tensor of one safetensors file, named by its key without `prefix` (only keys starting with it)."""
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            keys = [k for k in f.keys() if k.startswith(prefix)]
        return cls(files={k[len(prefix):]: (path, k) for k in keys if names is None or k[len(prefix):] in names})

    def names(self) -> list[str]:
        return [*self.files, *self.tensors]

    def _handle(self, path: str):
        from safetensors import safe_open

        if path not in self._open:
            self._open[path] = safe_open(path, framework="pt")
        return self._open[path]

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.tensors:
            return tuple(self.tensors[name].shape)
        path, key = self.files[name]
        return tuple(self._handle(path).get_slice(key).get_shape())

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop of tensor `name` (the whole tensor for a 0-dimensional one), as a new CPU tensor."""
        if name in self.tensors:
            t = self.tensors[name]
            return t.clone() if t.dim() == 0 else t[start:stop].clone()
        path, key = self.files[name]
        sl = self._handle(path).get_slice(key)
        return sl[:] if len(sl.get_shape()) == 0 else sl[start:stop]

    def __deepcopy__(self, memo):  # file handles are not copied: the copy reads the same files
        return self

    def __getstate__(self):
        return {"files": self.files, "tensors": self.tensors, "_open": {}}


@contextlib.contextmanager
def parameters_on_meta():
    """Inside: every parameter a module registers goes to the meta device (no memory, and its initialisation costs
    nothing), while buffers stay real: the values a model computes when it is built (rotary frequency tables,
    position ids) are kept, where `torch.device("meta")` would lose them."""
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register
