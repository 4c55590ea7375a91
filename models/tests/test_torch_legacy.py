"""scripts/torch_legacy.py (the packs' install-time conversion, standard library only)
against PyTorch itself: legacy-format state dicts written by torch.save — contiguous and
strided (transposed) tensors, float and integer storages, shared storages — read back
tensor for tensor, written as safetensors that safetensors' own reader gives back equal; and
a pickle that names any other global is refused without running it."""

from __future__ import annotations

import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import torch_legacy  # noqa: E402


def legacy_file(tmp_path: Path, state: OrderedDict) -> Path:
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def test_state_dicts_read_as_pytorch_reads_them(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(7)
    base = torch.randn(6, 4, generator=g)
    state = OrderedDict(
        conv=torch.randn(8, 3, 3, 3, generator=g),
        # A view in another layout, as weights converted from TensorFlow are stored.
        transposed=torch.randn(3, 3, 5, 7, generator=g).permute(3, 2, 0, 1),
        depthwise=torch.randn(5, 1, 3, 3, generator=g),
        rows=base[2:5],  # an offset into a shared storage
        whole=base,
        steps=torch.tensor(12345678901, dtype=torch.int64),
        scalar=torch.tensor(2.5),
    )
    path = legacy_file(tmp_path, state)
    out = tmp_path / "state.safetensors"
    torch_legacy.write_safetensors(torch_legacy.load(path), out)
    back = load_file(out)
    assert list(back) == list(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype, name
        assert torch.equal(back[name], t.contiguous()), name
    # Deterministic: the same input gives the same bytes (the packs pin their SHA-256).
    again = tmp_path / "again.safetensors"
    torch_legacy.write_safetensors(torch_legacy.load(path), again)
    assert again.read_bytes() == out.read_bytes()


class Exploit:
    def __reduce__(self):
        return (print, ("ran",))


def test_other_globals_are_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.pth"
    with path.open("wb") as f:
        pickle.dump(torch_legacy.MAGIC, f)
        pickle.dump(1001, f)
        pickle.dump({}, f)
        pickle.dump(OrderedDict(x=Exploit()), f)
        pickle.dump([], f)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        torch_legacy.load(path)
    assert "ran" not in capsys.readouterr().out
    # Not a legacy file at all.
    zipped = tmp_path / "new.pth"
    torch.save({"a": torch.zeros(1)}, zipped)
    with pytest.raises(Exception):
        torch_legacy.load(zipped)
