"""The bytes of tensor storage a process holds, counted from the tensors themselves (not RSS, which counts the
allocator's caches, the interpreter and mapped files): what "a rank holds" means in the memory tests."""
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def _storage(t):
    """(key, bytes) of a plain tensor's storage; None for meta tensors and subclasses without storage (DTensor)."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        return None
    s = t.untyped_storage()
    if s.device.type == "meta" or s.nbytes() == 0:
        return None
    return (s.device, s.data_ptr()), s.nbytes()


def held_bytes(*modules, extra=()) -> int:
    """Bytes of the distinct storages of the modules' parameters and buffers (and of `extra` tensors)."""
    seen = {}
    for t in [*(x for m in modules for x in (*m.parameters(), *m.buffers())), *extra]:
        t = t.to_local() if hasattr(t, "to_local") else t
        if (s := _storage(t)) is not None:
            seen[s[0]] = s[1]
    return sum(seen.values())


class PeakTensorBytes(TorchDispatchMode):
    """Inside: `peak` is the most bytes of tensor storage live at once among the tensors the operations inside read
    or create, sampled at every tensor operation. A storage counts from the first operation that touches it until
    its last tensor is freed; tensors created outside torch's dispatcher (a safetensors read) count from their first
    use. `now` is the current figure."""

    def __enter__(self):
        self.live: dict = {}  # storage key -> (bytes, weak references to its tensors)
        self.peak = 0
        return super().__enter__()

    def _see(self, x):
        if isinstance(x, (list, tuple)):
            for y in x:
                self._see(y)
        elif isinstance(x, torch.Tensor) and (s := _storage(x)) is not None:
            key, nbytes = s
            refs = [r for r in self.live.get(key, (0, []))[1] if r() is not None]  # (a freed address reused)
            refs.append(weakref.ref(x))
            self.live[key] = (nbytes, refs)

    @property
    def now(self) -> int:
        """Bytes live now (a storage's current size: FSDP2 frees a gathered parameter by resizing it to 0)."""
        total = 0
        for k, (_, refs) in list(self.live.items()):
            alive = [t for t in (r() for r in refs) if t is not None]
            if not alive:
                del self.live[k]
                continue
            total += alive[0].untyped_storage().nbytes()
        return total

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._see(args)
        self._see(list(kwargs.values()))
        self.peak = max(self.peak, self.now)
        out = func(*args, **kwargs)
        self._see(out)
        self.peak = max(self.peak, self.now)
        return out


def live_parameter_bytes() -> int:
    """Bytes of the distinct storages of every nn.Parameter alive in this process (a walk over the heap: slow)."""
    import gc

    seen = {}
    for o in gc.get_objects():
        if issubclass(type(o), torch.nn.Parameter) and (s := _storage(o)) is not None:
            seen[s[0]] = s[1]
    return sum(seen.values())
