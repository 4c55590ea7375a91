#!/usr/bin/env bash
# A Kubernetes control plane for the chart's tests, built from the Go module proxy (no Docker,
# no downloads outside the registries) and cached under $HOME/.cache/fusionstream/k8s/bin/:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes with
# its staging modules replaced by their published releases), etcd, kwok and kwokctl.
#
#   scripts/k8s.sh build   build (once) and cache the pinned binaries; prints their folder
#   scripts/k8s.sh up      build if needed, start a kwok cluster on 127.0.0.1 (a real
#                          kube-apiserver, etcd, scheduler and controller-manager; kwok
#                          simulates the nodes and the pods' lifecycle) with two CPU nodes
#                          (8 vCPUs, 32 GiB) and two GPU nodes (4 vCPUs, 16 GiB,
#                          nvidia.com/gpu: 1, tainted), print the kubeconfig export
#   scripts/k8s.sh env     print the kubeconfig export
#   scripts/k8s.sh down    delete the cluster
#
# First build ~10–25 min on 2 cores (kube-apiserver is most of it); later calls return at once.
# The cluster starts in seconds (~670 MB of memory). Real pods cannot run here (cgroup v1,
# which current kubelets refuse): kwok is the kubelet.
set -euo pipefail

CACHE="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}"
K8S="$CACHE/k8s"
BIN="$K8S/bin"
KUBE_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
# etcd's server module at the version k8s.io/kubernetes v1.37.2 itself requires (MVS).
ETCD_VERSION=v3.7.0
KWOK_VERSION=v0.8.0

CLUSTER=fusionstream
export KWOK_WORKDIR="$K8S/work"
KUBECONFIG_FILE="$KWOK_WORKDIR/kubeconfig"

log() { echo "k8s: $*" >&2; }

# The wrapper module: k8s.io/kubernetes at KUBE_VERSION, each of its ./staging replaces
# pointed at the published release of that module.
wrapper() {
  local src="$K8S/src" dir
  mkdir -p "$src"
  dir=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  {
    echo "module fusionstream.dev/k8s-tools"
    echo
    echo "go 1.26"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $KUBE_VERSION"
    echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo "	sigs.k8s.io/kwok $KWOK_VERSION"
    echo ")"
    echo
    awk '/=> \.\/staging\/src\//{print "replace " $1 " => " $1 " '"$STAGING_VERSION"'"}' "$dir/go.mod"
  } > "$src/go.mod"
  echo "$src"
}

build_one() { # package output [ldflags]
  if [[ -x "$BIN/$2" ]]; then return; fi
  log "building $2 ($1)"
  (cd "$K8S/src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "${3:-}" -o "$BIN/$2.tmp" "$1")
  mv "$BIN/$2.tmp" "$BIN/$2"
}

build() {
  mkdir -p "$BIN"
  wrapper > /dev/null
  # Without the version, clients cannot parse the server's (kubectl refuses "v0.0.0-master").
  # -s -w: no symbol table or DWARF (the links of these large binaries are much cheaper).
  local v="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
  build_one k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$v"
  build_one k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$v"
  build_one k8s.io/kubernetes/cmd/kubectl kubectl "$v"
  build_one k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$v"
  build_one go.etcd.io/etcd/server/v3 etcd "-s -w"
  build_one sigs.k8s.io/kwok/cmd/kwok kwok "-s -w"
  build_one sigs.k8s.io/kwok/cmd/kwokctl kwokctl "-s -w"
  echo "$BIN"
}

# A kwok node: NAME CPU MEMORY ALLOCATABLE_CPU ALLOCATABLE_MEMORY GPUS. GPU nodes carry what
# the NVIDIA device plugin and GPU feature discovery give real ones: the nvidia.com/gpu
# resource, the nvidia.com/gpu.present label and the usual taint.
node() {
  local gpu="" taint="" label=""
  if [[ $6 -gt 0 ]]; then
    gpu="    nvidia.com/gpu: \"$6\""
    label='    nvidia.com/gpu.present: "true"'
    taint=$'  taints:\n    - key: nvidia.com/gpu\n      value: present\n      effect: NoSchedule'
  fi
  cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: $1
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
$label
spec:
$taint
status:
  capacity:
    cpu: "$2"
    memory: $3
    pods: "110"
$gpu
  allocatable:
    cpu: $4
    memory: $5
    pods: "110"
$gpu
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
---
NODE
}

# The nodes: two CPU nodes (8 vCPUs, 32 GiB) and two of the smallest common GPU nodes
# (4 vCPUs, 16 GiB, one GPU), with allocatable figures as a kubelet reserves them.
nodes() {
  node cpu-0 8 32Gi 7910m 29Gi 0
  node cpu-1 8 32Gi 7910m 29Gi 0
  node gpu-0 4 16Gi 3920m 14848Mi 1
  node gpu-1 4 16Gi 3920m 14848Mi 1
}

up() {
  build > /dev/null
  mkdir -p "$KWOK_WORKDIR"
  if ! "$BIN/kwokctl" get clusters 2> /dev/null | grep -qx "$CLUSTER"; then
    # Every component on 127.0.0.1 (kwokctl binds all interfaces otherwise).
    printf '%s\n' 'kind: KwokctlConfiguration' 'apiVersion: config.kwok.x-k8s.io/v1alpha1' \
      'options:' '  bindAddress: 127.0.0.1' > "$KWOK_WORKDIR/kwokctl.yaml"
    "$BIN/kwokctl" --config "$KWOK_WORKDIR/kwokctl.yaml" create cluster --name "$CLUSTER" \
      --runtime binary --kubeconfig "$KUBECONFIG_FILE" \
      --kube-apiserver-binary "$BIN/kube-apiserver" \
      --kube-controller-manager-binary "$BIN/kube-controller-manager" \
      --kube-scheduler-binary "$BIN/kube-scheduler" --etcd-binary "$BIN/etcd" \
      --kwok-controller-binary "$BIN/kwok" --wait 120s > "$KWOK_WORKDIR/create.log" 2>&1 \
      || { tail -n 20 "$KWOK_WORKDIR/create.log" >&2; return 1; }
  fi
  nodes | "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" apply -f - > /dev/null
  log "cluster $CLUSTER up ($("$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" version 2> /dev/null | sed -n 's/^Server Version: //p')), nodes cpu-0 cpu-1 gpu-0 gpu-1"
  print_env
}

print_env() {
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
  echo "export PATH=$BIN:\$PATH"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  env) print_env ;;
  down)
    "$BIN/kwokctl" delete cluster --name "$CLUSTER" > /dev/null 2>&1 || true
    log "cluster $CLUSTER deleted"
    ;;
  *)
    echo "usage: $0 build|up|env|down" >&2
    exit 2
    ;;
esac
