"""PyTorch state dicts in the legacy (pre-1.6, non-zip) format read with the standard library
alone, written as safetensors: the model packs whose wheels carry such files are converted
once at install time (scripts/fetch_packs.py), with no PyTorch installed.

Only what a state dict holds is accepted: tensors (`torch._utils._rebuild_tensor_v2`) over
typed storages, in an OrderedDict; any other global in the pickle is refused, so a crafted
file cannot run code.

    python3 scripts/torch_legacy.py IN.pth [OUT.safetensors]   (lists the tensors)
"""

from __future__ import annotations

import array
import collections
import itertools
import json
import pickle
import struct
import sys

MAGIC = 0x1950A86A20F9469CFC6C

DTYPES = {  # storage class -> (safetensors dtype, element size)
    "FloatStorage": ("F32", 4), "DoubleStorage": ("F64", 8), "HalfStorage": ("F16", 2),
    "LongStorage": ("I64", 8), "IntStorage": ("I32", 4), "ByteStorage": ("U8", 1),
}

class Storage:
    """A typed storage: its bytes follow the pickle, in the order of the storage keys."""

    def __init__(self, kind: str, key: str, numel: int) -> None:
        self.kind, self.key, self.numel, self.data = kind, key, numel, b""


class Tensor:
    """A view of a storage: offset, size and stride in elements."""

    def __init__(self, storage: Storage, offset: int, size, stride) -> None:
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)


class StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def rebuild_tensor_v2(storage, offset, size, stride, *_rest):
    return Tensor(storage, offset, size, stride)


class Unpickler(pickle.Unpickler):
    """Knows the few globals of a state dict and the persistent ids of its storages."""

    def __init__(self, f, storages: dict) -> None:
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return rebuild_tensor_v2
        if module == "torch" and name in DTYPES:
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        typename, kind, key, _location, numel, view = pid
        if typename != "storage" or view is not None or kind.name not in DTYPES:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = Storage(kind.name, key, numel)
        return self.storages[key]



def load(path) -> dict:
    """The state dict of a legacy PyTorch file, its storages filled."""
    with open(path, "rb") as f:
        storages: dict = {}
        if Unpickler(f, storages).load() != MAGIC:
            raise ValueError(f"{path}: not a legacy PyTorch file")
        Unpickler(f, storages).load()  # protocol version
        Unpickler(f, storages).load()  # sys info
        obj = Unpickler(f, storages).load()
        keys = Unpickler(f, storages).load()
        for key in keys:
            s = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            size = DTYPES[s.kind][1]
            s.data = f.read(numel * size)
            if numel != s.numel or len(s.data) != numel * size:
                raise ValueError(f"{path}: storage {key} is truncated")
    return obj



def contiguous(t: Tensor) -> bytes:
    """The tensor's bytes in row-major order."""
    esz = DTYPES[t.storage.kind][1]
    n = 1
    for d in t.size:
        n *= d
    expect, acc = [], 1
    for d in reversed(t.size):
        expect.append(acc)
        acc *= d
    expect = tuple(reversed(expect))
    if n <= 1 or all(a == b for a, b, d in zip(expect, t.stride, t.size) if d != 1):
        return t.storage.data[t.offset * esz:(t.offset + n) * esz]
    # A strided view (weights converted from TensorFlow keep its layout): copy element by
    # element into row-major order.
    code = {1: "B", 2: "H", 4: "I", 8: "Q"}[esz]
    src = array.array(code, t.storage.data)
    out = array.array(code, bytes(n * esz))
    for i, idx in enumerate(itertools.product(*(range(d) for d in t.size))):
        out[i] = src[t.offset + sum(a * b for a, b in zip(idx, t.stride))]
    return out.tobytes()



def write_safetensors(state: dict, path) -> None:
    """Every tensor of `state`, in its order, as a safetensors file (deterministic bytes)."""
    header, blobs, off = {}, [], 0
    for name, t in state.items():
        if not isinstance(t, Tensor):
            continue
        b = contiguous(t)
        header[name] = {
            "dtype": DTYPES[t.storage.kind][0],
            "shape": list(t.size),
            "data_offsets": [off, off + len(b)],
        }
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


if __name__ == "__main__":
    st = load(sys.argv[1])
    for k, t in st.items():
        print(k, t.storage.kind, t.size)
    if len(sys.argv) > 2:
        write_safetensors(st, sys.argv[2])
