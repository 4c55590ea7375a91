#!/usr/bin/env bash
# Runs a program of an unpacked image (a root folder, e.g. `buildah mount`) the way a container
# runtime does, without a daemon: new mount and PID namespaces (the program is PID 1, so it
# gets SIGTERM only because it handles it, as in a pod), the image's root bound read-only
# (Kubernetes' readOnlyRootFilesystem; checked), /proc, /dev and /sys, the volumes bound over it,
# then chroot, working folder, uid/gid with no supplementary groups and exactly the given
# environment. The network is the host's (services on 127.0.0.1 are reachable). As root.
#
# Usage: scripts/image-run.sh ROOT [--user UID:GID] [--workdir DIR] [--rw-root]
#          [-v HOST:PATH[:ro]]... [-e NAME=VALUE]... -- PROGRAM ARGS...
# Exits with the program's status.
set -euo pipefail
if [[ ${FUSIONSTREAM_IMAGE_RUN_INSIDE:-} != 1 ]]; then
  # Into new mount and PID namespaces; this script runs again there as PID 1 and execs the
  # program, which keeps PID 1. Mounts made there vanish with the namespace.
  exec env FUSIONSTREAM_IMAGE_RUN_INSIDE=1 unshare --mount --pid --fork --propagation private \
    -- "$0" "$@"
fi
root=$1
shift
user=0:0 workdir=/ ro=1 volumes=() envs=()
while (($#)); do
  case $1 in
    --user) user=$2; shift ;;
    --workdir) workdir=$2; shift ;;
    --rw-root) ro=0 ;;
    -v) volumes+=("$2"); shift ;;
    -e) envs+=("$2"); shift ;;
    --) shift; break ;;
    *) echo "image-run: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
(($#)) || { echo "image-run: no program given" >&2; exit 2; }
[[ -x $root${1} ]] || { echo "image-run: $1 is not an executable of the image" >&2; exit 2; }

# /mnt of this mount namespace (the host's /mnt is untouched) becomes the container's root.
r=/mnt
mount --bind "$root" "$r"
if ((ro)); then mount -o remount,bind,ro "$r"; fi
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount --bind /sys "$r/sys"
mount -o remount,bind,ro "$r/sys"
for v in "${volumes[@]}"; do
  IFS=: read -r host path mode <<<"$v"
  [[ -d $r$path ]] || { echo "image-run: the image has no folder $path to mount on" >&2; exit 2; }
  mount --bind "$host" "$r$path"
  if [[ $mode == ro ]]; then mount -o remount,bind,ro "$r$path"; fi
done
if ((ro)) && touch "$r/.image-run-probe" 2>/dev/null; then
  echo "image-run: the root is writable although it should be read-only" >&2
  exit 1
fi
exec env -i "${envs[@]}" /usr/bin/unshare --root="$r" --wd="$workdir" \
  --setgid "${user#*:}" --setuid "${user%%:*}" -- "$@"
