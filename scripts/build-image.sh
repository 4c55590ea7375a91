#!/usr/bin/env bash
# Builds the fusionstream container image (Containerfile) without a daemon: buildah with the
# vfs storage driver and chroot isolation, as root. Writes an OCI archive and prints its size.
#
#   scripts/build-image.sh                      # compile in the build stage (release, CPU)
#   scripts/build-image.sh --binary PATH        # take a binary built here instead (seconds)
#   scripts/build-image.sh --packs              # bake the model packs (scripts/fetch-packs.sh)
#   scripts/build-image.sh --cuda --binary PATH # the CUDA variant: a `--features cuda` binary
#                                               # (docs/container.md)
#   scripts/build-image.sh --prepare-only       # only dist/ (for `docker build` elsewhere)
# Other options: --tag NAME:TAG (default fusionstream:<crate version>[-cuda]), --base IMAGE,
# --builder IMAGE, --out FILE (default $CACHE/image/<name>-<tag>.oci.tar).
#
# Bases: with no --base/--builder and no registry reachable, the runtime base is Debian bookworm
# made by debootstrap (minbase, trimmed; cached as a tarball under $CACHE/image), for --cuda
# with the CUDA 13.0 runtime libraries from NVIDIA's PyPI wheels added (with a registry:
# nvidia/cuda:13.0.1-runtime-ubuntu24.04), and the builder
# is that base with build-essential and Rust 1.95.0 from rustup. buildah and debootstrap are
# installed from Debian's packages when missing (root, apt). dist/ gets the ONNX Runtime library
# (the onnxruntime wheel pinned in models/requirements.txt), the SBOM (cargo-cyclonedx, installed
# once into $CACHE/tools), the licences and, with --packs, the packs.
# The SBOM is also written beside the archive (<archive without .oci.tar>.sbom.cdx.json).
# Prints "image: <archive> <size MB>" and "image-ref: <local name>" last.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}"
IMG="$CACHE/image"
mkdir -p "$IMG"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
rust_version=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)

binary="" cuda=0 packs=0 base="" builder="" tag="" out="" prepare_only=0
while (($#)); do
  case $1 in
    --binary) binary=$(realpath "$2"); shift ;;
    --cuda) cuda=1 ;;
    --packs) packs=1 ;;
    --base) base=$2; shift ;;
    --builder) builder=$2; shift ;;
    --tag) tag=$2; shift ;;
    --out) out=$2; shift ;;
    --prepare-only) prepare_only=1 ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
suffix=""
((cuda)) && suffix="-cuda"
tag=${tag:-fusionstream:$version$suffix}
out=${out:-$IMG/${tag//[:\/]/-}.oci.tar}
t0=$(date +%s)
say() { echo "== build-image: $*" >&2; }

# ---- dist/: what the Containerfile copies besides the sources --------------------------------
say "preparing dist/"
rm -rf dist && mkdir -p dist/bin dist/onnxruntime dist/packs dist/doc dist/ca
# Extra CA certificates of this machine (a TLS proxy's), trusted by the build stage only.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt dist/ca/
  say "the build stage trusts this machine's extra CA certificates too ($(ls dist/ca | wc -l))"
fi
ort_version=$(sed -n 's/^onnxruntime==\(.*\)$/\1/p' models/requirements.txt)
wheel_dir="$CACHE/wheels"
wheel=$(ls "$wheel_dir"/onnxruntime-"$ort_version"-*manylinux*x86_64.whl 2>/dev/null | head -1 || true)
if [[ -z $wheel ]]; then
  say "downloading the onnxruntime $ort_version wheel (once)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    "onnxruntime==$ort_version" -d "$wheel_dir" >&2
  wheel=$(ls "$wheel_dir"/onnxruntime-"$ort_version"-*manylinux*x86_64.whl | head -1)
fi
python3 - "$wheel" dist <<'PY'
import re, sys, zipfile
wheel, dist = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    lib = [n for n in names if re.fullmatch(r"onnxruntime/capi/libonnxruntime\.so\.[0-9.]+", n)]
    assert len(lib) == 1, lib
    with open(f"{dist}/onnxruntime/libonnxruntime.so", "wb") as f:
        f.write(z.read(lib[0]))
    for n in names:
        base = n.rsplit("/", 1)[-1]
        # The licence and the third-party notices travel with the library.
        if n in ("onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"):
            with open(f"{dist}/doc/onnxruntime-{base}", "wb") as f:
                f.write(z.read(n))
PY
chmod 0644 dist/onnxruntime/libonnxruntime.so

# SBOM of the Rust dependency graph of this build (features included).
cyclonedx="$CACHE/tools/bin/cargo-cyclonedx"
if [[ ! -x $cyclonedx ]]; then
  say "installing cargo-cyclonedx 0.5.9 into $CACHE/tools (once, a few minutes)"
  cargo install --quiet --locked --root "$CACHE/tools" cargo-cyclonedx@0.5.9 >&2
fi
features=()
((cuda)) && features=(--features cuda)
# (It writes one file beside every workspace member's Cargo.toml: the binary's is kept.)
"$cyclonedx" cyclonedx --manifest-path workers/fusionstream/Cargo.toml --format json \
  --spec-version 1.5 --override-filename image-sbom.cdx --target x86_64-unknown-linux-gnu \
  "${features[@]}" >&2
mv workers/fusionstream/image-sbom.cdx.json dist/doc/sbom.cdx.json
rm -f workers/*/image-sbom.cdx.json
python3 - dist/doc/sbom.cdx.json <<'PY' >&2
import json, sys
bom = json.load(open(sys.argv[1]))
print(f"== build-image: SBOM: {len(bom.get('components', []))} components (CycloneDX {bom['specVersion']})")
PY

if ((packs)); then
  eval "$(scripts/fetch-packs.sh)"
  say "baking the model packs from $FUSIONSTREAM_PACKS"
  cp -r "$FUSIONSTREAM_PACKS"/. dist/packs/
else
  echo "No packs baked: mount them here (scripts/fetch-packs.sh installs them) or build with --packs." \
    > dist/packs/README.txt
fi

build_args=(--build-arg "VERSION=$version"
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
if ((cuda)); then
  build_args+=(--build-arg FEATURES=cuda --build-arg ORT_DYLIB_PATH=)
fi
if [[ -n $binary ]]; then
  strip -o dist/bin/fusionstream "$binary"
  build_args+=(--build-arg BINARY=prebuilt)
  if ((cuda)) && ! readelf -d dist/bin/fusionstream | grep -q 'libcuda\|libcublas\|libcurand'; then
    echo "build-image: --cuda with a binary that links no CUDA library: build it with --features cuda" >&2
    exit 2
  fi
else
  # The compile stage needs the sources only; a placeholder keeps the prebuilt stage valid.
  # (BINARY is passed although it is the default: buildah resolves the stage that
  # `FROM ${BINARY}` names only from --build-arg values.)
  : > dist/bin/fusionstream
  build_args+=(--build-arg BINARY=compile)
fi
if ((prepare_only)); then
  say "dist/ prepared (build with: docker build -f Containerfile ${build_args[*]} .)"
  exit 0
fi

# ---- bases --------------------------------------------------------------------------------
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing buildah and debootstrap from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah debootstrap >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah debootstrap >&2; }
fi
b() { buildah --storage-driver vfs "$@"; }
export BUILDAH_ISOLATION=chroot
has_image() { b inspect --type image "$1" >/dev/null 2>&1; }
registry=0 pull=(--pull=never)
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 https://registry-1.docker.io/v2/ || true)
[[ $code == 401 || $code == 200 ]] && registry=1 pull=()

local_base=localhost/fusionstream-base:bookworm
if [[ -z $base ]] && ((registry == 0)); then
  base=$local_base
  if ! has_image "$base"; then
    tarball="$IMG/debian-bookworm-minbase.tar"
    if [[ ! -s $tarball ]]; then
      say "no registry reachable: making a Debian bookworm base with debootstrap (once, ~1 min)"
      root=$(mktemp -d "$IMG/rootfs.XXXXXX")
      debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >&2
      # Trim what a container never uses (as the official slim images do).
      rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
      find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
      tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
      mv "$tarball.tmp" "$tarball"
      rm -rf "$root"
    fi
    say "importing the base from $tarball"
    c=$(b from scratch)
    b add "$c" "$tarball" / >/dev/null
    b config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
    b commit --rm "$c" "$base" >/dev/null
  fi
fi
if ((cuda)) && [[ -z $base ]] && ((registry)); then
  base=docker.io/nvidia/cuda:13.0.1-runtime-ubuntu24.04
fi
if ((cuda)) && [[ $base == "$local_base" ]]; then
  # The CUDA 13 runtime libraries the `cuda` binary loads, from NVIDIA's PyPI wheels (the
  # versions of the CUDA 13.0 toolchain it is built with); libcuda.so.1 is the node's driver's,
  # mounted by the NVIDIA container toolkit, never part of the image.
  base=localhost/fusionstream-base:bookworm-cuda13.0
  if ! has_image "$base"; then
    say "making $base: $local_base + the CUDA 13.0 runtime libraries from PyPI (once)"
    wheels="$CACHE/wheels/cuda13"
    mkdir -p "$wheels"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$wheels" nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
      nvidia-curand==10.4.0.35 nvidia-cublas==13.1.0.3 >&2
    libs=$(mktemp -d)
    python3 - "$libs" "$wheels"/*.whl <<'PY'
import os, re, sys, zipfile
out = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            if re.fullmatch(r"nvidia/cu13/lib/lib(cudart|nvrtc|nvrtc-builtins|curand|cublas|cublasLt)\.so[.0-9]*", n):
                with open(os.path.join(out, n.rsplit("/", 1)[1]), "wb") as f:
                    f.write(z.read(n))
PY
    echo /usr/local/cuda/lib64 > "$libs/cuda.conf"
    c=$(b from --pull=never "$local_base")
    b copy "$c" "$libs/" /usr/local/cuda/lib64/ >/dev/null
    b run "$c" -- sh -c 'mv /usr/local/cuda/lib64/cuda.conf /etc/ld.so.conf.d/ && chmod 0644 /usr/local/cuda/lib64/* && ldconfig' >&2
    b config --env NVIDIA_VISIBLE_DEVICES=all --env NVIDIA_DRIVER_CAPABILITIES=compute,utility "$c"
    b commit --rm "$c" "$base" >/dev/null
    rm -rf "$libs"
  fi
fi
[[ -n $base ]] && build_args+=(--build-arg "BASE=$base")

if [[ -z $binary ]]; then
  if [[ -z $builder ]] && ((registry == 0)); then
    builder=localhost/fusionstream-builder:rust-$rust_version-bookworm
    if ! has_image "$builder"; then
      say "making the builder $builder (Debian bookworm, build-essential, Rust $rust_version by rustup; once)"
      c=$(b from --pull=never "$local_base")
      b copy "$c" dist/ca/ /usr/local/share/ca-certificates/build/ >/dev/null
      b run --network host "$c" -- sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends ca-certificates curl gcc libc6-dev && \
        update-ca-certificates && rm -rf /var/lib/apt/lists/* && \
        curl -sSf https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
          -o /tmp/rustup-init && chmod +x /tmp/rustup-init && \
        RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo /tmp/rustup-init -y -q \
          --no-modify-path --profile minimal --default-toolchain $rust_version && rm /tmp/rustup-init" >&2
      b config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
        --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
      b commit --rm "$c" "$builder" >/dev/null
    fi
  fi
  [[ -n $builder ]] && build_args+=(--build-arg "BUILDER=$builder")
fi

# ---- build --------------------------------------------------------------------------------
if [[ -n $binary ]]; then how="the binary $binary"; else how="compiling in the build stage"; fi
say "buildah build -t $tag ($how)"
# buildah leaves the working containers of some stages behind (e.g. one that is only a
# `FROM`): remove every container this build added, whatever its outcome, then the stages and
# the images this tag replaced, left untagged (vfs copies whole layers: they are large).
before=$(b containers -q | sort)
cleanup() {
  comm -13 <(echo "$before") <(b containers -q | sort) | xargs -r buildah --storage-driver vfs rm >/dev/null
  b rmi --prune >/dev/null 2>&1 || true
}
trap cleanup EXIT
b build --isolation chroot --network host "${pull[@]}" --layers=false -f Containerfile \
  "${build_args[@]}" -t "$tag" . >&2
rm -f "$out"
b push --quiet "$tag" "oci-archive:$out:$tag" >&2
cp dist/doc/sbom.cdx.json "${out%.oci.tar}.sbom.cdx.json"
size_mb=$(python3 -c "import os,sys; print(round(os.path.getsize(sys.argv[1]) / 1e6, 1))" "$out")
say "built in $(($(date +%s) - t0)) s"
echo "image: $out ${size_mb} MB (compressed layers); $(b images --format '{{.Size}}' "$tag" | head -1) unpacked"
echo "image-ref: $tag"
