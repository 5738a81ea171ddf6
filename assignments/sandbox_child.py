"""The graded code's side of trusted grading: a child process that imports the student's modules and runs their
functions on the inputs the grader sends, answering with plain data (assignments/sandbox.py is the grader's side).

This file is self-contained (standard library, torch, numpy, safetensors): the grader passes its source with
`python -I -c`, so the child never needs to read the kit's files (under Gradescope it runs as a user that cannot).

Wire format, both ways: an 8-byte big-endian length, then a 4-byte length, a JSON document and a safetensors blob.
The JSON holds the structure (None, bool, numbers, strings, lists, {"$tuple"}, {"$dict"}, {"$t": i} for tensor i of
the blob, {"$np": i} for a numpy array, {"$h": id} for an object that stays in the child: a student's class
instance or function, callable through later requests). Nothing is pickled: data carries no behaviour.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import traceback

MAX_MESSAGE = 512 * 2**20  # bytes: a larger message is refused, never allocated


# ----------------------------------------------------------------------------- codec (shared with the grader)


def pack(obj, tensors: list, handle=None):
    """obj -> a JSON-able structure; tensors (torch or numpy) are appended to `tensors`. `handle(obj)` turns an
    object that is not data into {"$h": id}; without it such an object is a TypeError."""
    import numpy as np
    import torch

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return {"$t": len(tensors) - 1, "grad": bool(obj.requires_grad)}
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        tensors.append(torch.from_numpy(np.ascontiguousarray(obj)))
        return {"$np": len(tensors) - 1}
    if isinstance(obj, np.generic) and not isinstance(obj, np.object_):
        return obj.item()
    if isinstance(obj, list):
        return [pack(x, tensors, handle) for x in obj]
    if isinstance(obj, tuple):
        return {"$tuple": [pack(x, tensors, handle) for x in obj]}
    if isinstance(obj, dict):
        return {"$dict": [[pack(k, tensors, handle), pack(v, tensors, handle)] for k, v in obj.items()]}
    if handle is not None:
        return handle(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} as data")


def unpack(doc, tensors: dict, handle=None):
    """The inverse of pack: `tensors` is {"t<i>": tensor}; `handle(doc)` rebuilds {"$h": ...} entries."""
    if isinstance(doc, list):
        return [unpack(x, tensors, handle) for x in doc]
    if not isinstance(doc, dict):
        return doc
    if "$t" in doc:
        return tensors[f"t{doc['$t']}"]
    if "$np" in doc:
        return tensors[f"t{doc['$np']}"].numpy()
    if "$tuple" in doc:
        return tuple(unpack(x, tensors, handle) for x in doc["$tuple"])
    if "$dict" in doc:
        out = {}
        for k, v in doc["$dict"]:
            k = unpack(k, tensors, handle)
            out[tuple(k) if isinstance(k, list) else k] = unpack(v, tensors, handle)
        return out
    if "$h" in doc:
        if handle is None:
            raise ValueError("an object handle where only data is allowed")
        return handle(doc)
    return {k: unpack(v, tensors, handle) for k, v in doc.items()}


def encode(header: dict, tensors: list) -> bytes:
    from safetensors.torch import save

    blob = save({f"t{i}": t.detach().cpu().contiguous().clone() for i, t in enumerate(tensors)}) if tensors else b""
    text = json.dumps(header).encode()
    body = struct.pack(">I", len(text)) + text + blob
    return struct.pack(">Q", len(body)) + body


def decode(body: bytes) -> tuple[dict, dict]:
    from safetensors.torch import load

    (n,) = struct.unpack(">I", body[:4])
    header = json.loads(body[4: 4 + n].decode())
    blob = body[4 + n:]
    return header, (load(blob) if blob else {})


# ----------------------------------------------------------------------------- the child


def _read(f) -> bytes | None:
    head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack(">Q", head)
    if n > MAX_MESSAGE:
        raise ValueError(f"a request of {n} bytes")
    return f.read(n)


def _exact_k3(logp, ref_logp):
    """An exact k3, substituted for kl_k3 when a loss exercise is graded apart from exercise 02."""
    import torch

    d = ref_logp - logp
    return torch.exp(d) - d - 1


SUBSTITUTES = {"exact_k3": _exact_k3}


def _error(e: BaseException, tree: str) -> dict:
    """The exception as data: its type, message and the innermost frame in the graded tree."""
    where = ""
    for fr in reversed(traceback.extract_tb(e.__traceback__)):
        if fr.filename.startswith(tree + os.sep):
            where = f"{os.path.relpath(fr.filename, tree)}:{fr.lineno}"
            break
    return {"error": type(e).__name__, "message": str(e)[:2000], "where": where,
            "not_implemented": isinstance(e, NotImplementedError)}


def serve(tree: str) -> None:
    import importlib

    import torch

    proto_in, proto_out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # what the student prints goes to stderr, never into the answers
    sys.stdin, sys.stdout = open(os.devnull), sys.stderr
    sys.path.insert(0, tree)
    os.chdir(tree)
    torch.set_num_threads(1)
    objects: dict[int, object] = {}

    def keep(obj):
        objects[len(objects) + 1] = obj
        return {"$h": len(objects), "callable": callable(obj), "type": type(obj).__name__}

    def module(name):
        mod = importlib.import_module(name)
        path = os.path.abspath(getattr(mod, "__file__", "") or "")
        if not path.startswith(tree + os.sep):
            raise ImportError(f"{name} was imported from {path}, not from the graded tree")
        return mod

    while True:
        body = _read(proto_in)
        if body is None:
            return
        tensors: list = []
        try:
            req, data = decode(body)
            op = req["op"]
            if op == "ping":
                answer = {}
            elif op == "import":
                mod = module(req["module"])
                answer = {"file": os.path.relpath(mod.__file__, tree)}
            elif op == "call":
                leaves = []

                def arg_handle(doc):
                    return objects[doc["$h"]]

                args, kwargs = unpack(req["args"], data, arg_handle), unpack(req["kwargs"], data, arg_handle)
                for i in range(len(data)):
                    t = data[f"t{i}"]
                    if req["grad"][i]:
                        t.requires_grad_(True)
                        leaves.append(t)
                before = {i: data[f"t{i}"].clone() for i in range(len(data)) if not req["grad"][i]}
                target = req["target"]
                if "handle" in target:
                    fn = objects[target["handle"]]
                    owner, saved = None, {}
                else:
                    owner = module(target["module"])
                    fn = getattr(owner, target["attr"])
                    saved = {k: getattr(owner, k) for k in req.get("patch", {})}
                for k, v in req.get("patch", {}).items():
                    setattr(owner, k, SUBSTITUTES[v])
                try:
                    result = fn(*args, **kwargs)
                finally:
                    for k, v in saved.items():
                        setattr(owner, k, v)
                doc = pack(result, tensors, keep)
                jac = {}
                for i, t in enumerate(list(tensors)):
                    if isinstance(t, torch.Tensor) and t.requires_grad and leaves:
                        rows = []
                        for j in range(t.numel()):
                            gs = torch.autograd.grad(t.reshape(-1)[j], leaves, retain_graph=True, allow_unused=True)
                            rows.append([torch.zeros(x.numel(), dtype=t.dtype) if g is None else g.reshape(-1).to(t.dtype)
                                         for g, x in zip(gs, leaves)])
                        jac[str(i)] = []
                        for k in range(len(leaves)):
                            tensors.append(torch.stack([r[k] for r in rows]) if rows
                                           else torch.zeros(0, leaves[k].numel(), dtype=t.dtype))
                            jac[str(i)].append(len(tensors) - 1)
                changed = {}
                for i, old in before.items():
                    new = data[f"t{i}"]
                    if new.shape != old.shape or not torch.equal(new, old):
                        tensors.append(new)
                        changed[str(i)] = len(tensors) - 1
                answer = {"result": doc, "jac": jac, "changed": changed}
            else:
                raise ValueError(f"unknown request {op!r}")
        except BaseException as e:  # noqa: BLE001 — everything the student's code raises, SystemExit included
            tensors, answer = [], _error(e, tree)
        try:
            out = encode(answer, tensors)
        except BaseException as e:  # noqa: BLE001 — e.g. an answer safetensors cannot hold
            out = encode(_error(e, tree), [])
        proto_out.write(out)
        proto_out.flush()


if __name__ == "__main__":
    serve(os.path.abspath(sys.argv[1]))
