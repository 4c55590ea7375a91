#!/usr/bin/env bash
# The chart on a real Kubernetes API (part of scripts/test.sh): a kube-apiserver, etcd,
# scheduler and controller-manager built from the Go module proxy, with kwok simulating two CPU
# and two GPU nodes and the pods' lifecycle (scripts/k8s.sh). Pods are admitted, scheduled,
# made ready and (for Jobs) completed by the real control plane; no container runs. Checks:
#   - `kubectl apply --dry-run=server` of every rendered manifest for the default values and
#     each values file of helm/examples/ (server-side validation, admission, Pod Security
#     `restricted` warnings treated as failures; KEDA's CRDs from its Go module);
#   - in a namespace that enforces Pod Security `restricted`: `helm install --wait` of the GPU
#     workers (pods on the GPU nodes, PodDisruptionBudget, ServiceAccount, ConfigMap), a config
#     change rolling them (`helm upgrade`: a new ReplicaSet through the checksum annotation),
#     `helm rollback`, `helm uninstall` leaving nothing behind; CPU workers with the HPA;
#     GPU workers with KEDA; exactly-once workers on a StatefulSet; the backfill's indexed Job
#     completing every index with its checkpoint claim; the vector index's StatefulSet with a
#     claim per replica and its Service's endpoints;
#   - GPU workers with every GPU node cordoned: reported Pending with the scheduler's reason,
#     and the release notes saying what to set.
# Usage: helm/test-cluster.sh   (starts the cluster if needed; leaves it up: scripts/k8s.sh down)
set -euo pipefail
cd "$(dirname "$0")/.."
helm=$(scripts/helm-bin.sh)
eval "$(scripts/k8s.sh up)"
chart=helm/fusionstream
ns=fusionstream-test
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# KEDA's CRDs at a pinned version, from its Go module's zip (config/crd/bases).
keda_version=v2.20.2

log() { echo "== $*"; }
fail() {
  echo "FAILED: $*" >&2
  kubectl -n "$ns" get all,pvc -o wide >&2 || true
  exit 1
}
k() { kubectl -n "$ns" "$@"; }
jp() { k get "$1" -o "jsonpath=$2"; }

# Everything a release may leave in the namespace, by name (the namespace's own default
# ServiceAccount and root CA ConfigMap excepted).
leftovers() {
  k get all,configmaps,secrets,serviceaccounts,pdb,hpa,scaledobjects.keda.sh,pvc,endpointslices,jobs \
    -o name 2>/dev/null | grep -vE '^(configmap/kube-root-ca.crt|serviceaccount/default)$' || true
}

# `helm uninstall --wait`, then nothing of the release may remain (pods included).
uninstall() {
  "$helm" uninstall "$1" -n "$ns" --wait --timeout 90s > /dev/null
  local left
  for _ in $(seq 60); do
    left=$(leftovers)
    [[ -z $left ]] && return 0
    sleep 1
  done
  fail "after helm uninstall $1, left behind: $left"
}

# Pods of a release's component, as "name node phase" lines.
pods() {
  k get pods -l "app.kubernetes.io/instance=$1,app.kubernetes.io/component=$2" \
    -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase}{"\n"}{end}'
}

# Every pod of a release's component Running on a node named $3-* (cpu, gpu), $4 of them.
expect_pods() {
  local rel=$1 comp=$2 nodes=$3 want=$4 got name node phase
  got=$(pods "$rel" "$comp")
  echo "$got" | sed 's/^/   /'
  [[ $(grep -c . <<<"$got") == "$want" ]] || fail "$rel: want $want $comp pods"
  while read -r name node phase; do
    [[ $phase == Running && $node == "$nodes"-* ]] || fail "$rel: $name is $phase on '$node'"
  done <<<"$got"
}

log "KEDA $keda_version CRDs"
crds=$(GOFLAGS=-mod=mod go mod download -json "github.com/kedacore/keda/v2@$keda_version" |
  sed -n 's/.*"Dir": "\(.*\)",*/\1/p')/config/crd/bases
[[ -d $crds ]] || fail "no KEDA module at $keda_version"
# Server-side: the ScaledJob CRD is larger than client-side apply's annotation allows.
kubectl apply --server-side --force-conflicts -f "$crds" > /dev/null
for _ in $(seq 60); do
  [[ $(kubectl get crd scaledobjects.keda.sh \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}') == True ]] && break
  sleep 1
done

log "namespace $ns (Pod Security: restricted, enforced)"
kubectl delete namespace "$ns" --ignore-not-found --wait > /dev/null
kubectl create namespace "$ns" > /dev/null
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest pod-security.kubernetes.io/warn=restricted > /dev/null

# Volumes for the claims (no provisioner here): static PersistentVolumes of a test class.
volumes() {
  local i
  for i in $(seq 0 $(($1 - 1))); do
    cat <<PV
apiVersion: v1
kind: PersistentVolume
metadata:
  name: fusionstream-test-$i
  labels: {fusionstream-test: "true"}
spec:
  storageClassName: fusionstream-test
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: /var/lib/fusionstream-test/$i}
---
PV
  done
}
kubectl delete pv -l fusionstream-test=true --ignore-not-found > /dev/null
volumes 3 | kubectl apply -f - > /dev/null

log "kubectl apply --dry-run=server: every values file"
for values in "$chart/values.yaml" helm/examples/*.yaml; do
  "$helm" template fs "$chart" -n "$ns" -f "$values" > "$work/rendered.yaml"
  if ! k apply --dry-run=server -f "$work/rendered.yaml" > "$work/dry.out" 2>&1; then
    cat "$work/dry.out" >&2
    fail "the server refused the manifests of $values"
  fi
  # Pod Security warnings (pod templates that the restricted level would refuse) fail too.
  grep -i "warning" "$work/dry.out" >&2 && fail "warnings for $values"
  echo "   $values: $(grep -c . "$work/dry.out") objects accepted"
done

# The namespace really enforces the level: a worker allowed to escalate privileges is refused.
"$helm" template fs "$chart" -n "$ns" --set securityContext.allowPrivilegeEscalation=true \
  > "$work/rendered.yaml"
k apply --dry-run=server -f "$work/rendered.yaml" > "$work/dry.out" 2>&1 || true
grep -q 'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation' "$work/dry.out" ||
  { cat "$work/dry.out" >&2; fail "Pod Security restricted did not object to privilege escalation"; }
"$helm" install psa "$chart" -n "$ns" --set securityContext.allowPrivilegeEscalation=true \
  --wait --timeout 10s > /dev/null 2>&1 && fail "a privileged worker became ready under restricted"
k get events --field-selector reason=FailedCreate -o jsonpath='{.items[*].message}' |
  grep -q 'violates PodSecurity "restricted:latest"' || fail "no pod refused by Pod Security"
echo "   a worker allowed to escalate privileges: warned at dry-run, its pods refused"
uninstall psa

log "GPU workers: helm install --wait"
"$helm" install gpu "$chart" -n "$ns" --wait --timeout 120s > "$work/notes"
expect_pods gpu worker gpu 2
k get deployment/gpu-fusionstream-worker pdb/gpu-fusionstream-worker sa/gpu-fusionstream \
  configmap/gpu-fusionstream service/gpu-fusionstream-metrics -o name | sed 's/^/   /'
jp configmap/gpu-fusionstream '{.data.config\.toml}' | grep -q 'bootstrap_servers = "kafka:9092"' ||
  fail "the ConfigMap lacks the worker's configuration"
[[ $(jp pdb/gpu-fusionstream-worker '{.status.expectedPods}') == 2 ]] ||
  fail "the PodDisruptionBudget does not cover the workers"
sum1=$(jp deployment/gpu-fusionstream-worker '{.spec.template.metadata.annotations.checksum/config}')

log "GPU workers: helm upgrade with a changed configuration rolls them"
jp configmap/gpu-fusionstream '{.data.config\.toml}' |
  sed 's/group_id = "fusionstream"/group_id = "fusionstream-v2"/' > "$work/v2.toml"
"$helm" upgrade gpu "$chart" -n "$ns" --reuse-values --set-file config="$work/v2.toml" \
  --wait --timeout 120s > /dev/null
sum2=$(jp deployment/gpu-fusionstream-worker '{.spec.template.metadata.annotations.checksum/config}')
[[ $sum1 != "$sum2" ]] || fail "the configuration changed, the checksum did not"
[[ $(jp deployment/gpu-fusionstream-worker '{.metadata.annotations.deployment\.kubernetes\.io/revision}') == 2 ]] ||
  fail "the Deployment did not roll"
expect_pods gpu worker gpu 2
for rs in $(k get rs -l app.kubernetes.io/instance=gpu -o name); do
  echo "   $rs: $(k get "$rs" -o jsonpath='{.spec.replicas} replicas, config {.spec.template.metadata.annotations.checksum/config}' | cut -c1-40)"
done

log "GPU workers: helm rollback"
"$helm" rollback gpu 1 -n "$ns" --wait --timeout 120s > /dev/null
[[ $(jp deployment/gpu-fusionstream-worker '{.spec.template.metadata.annotations.checksum/config}') == "$sum1" ]] ||
  fail "rollback did not restore the first configuration"
jp configmap/gpu-fusionstream '{.data.config\.toml}' | grep -q 'group_id = "fusionstream"$' ||
  fail "rollback did not restore the ConfigMap"
expect_pods gpu worker gpu 2
"$helm" history gpu -n "$ns" | sed 's/^/   /'

log "GPU workers: helm uninstall leaves nothing"
uninstall gpu

log "GPU workers with every GPU node cordoned: Pending, with the scheduler's reason"
kubectl cordon gpu-0 gpu-1 > /dev/null
trap 'kubectl uncordon gpu-0 gpu-1 > /dev/null 2>&1; rm -rf "$work"' EXIT
if "$helm" install nogpu "$chart" -n "$ns" --wait --timeout 15s > "$work/notes" 2> "$work/err"; then
  fail "GPU workers became ready with no schedulable GPU node"
fi
sed 's/^/   helm: /' "$work/err"
for pod in $(k get pods -l app.kubernetes.io/instance=nogpu -o name); do
  [[ $(k get "$pod" -o jsonpath='{.status.phase}') == Pending ]] || fail "$pod is not Pending"
  reason=$(k get "$pod" -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}: {.status.conditions[?(@.type=="PodScheduled")].message}')
  echo "   $pod: $reason"
  grep -q "^Unschedulable: .*Insufficient nvidia.com/gpu" <<<"$reason" || fail "unexpected reason: $reason"
done
kubectl uncordon gpu-0 gpu-1 > /dev/null
trap 'rm -rf "$work"' EXIT
"$helm" get notes nogpu -n "$ns" > "$work/notes"
grep -q 'Insufficient nvidia.com/gpu' "$work/notes" && grep -q 'worker.gpus=0' "$work/notes" ||
  fail "the release notes do not say what to set"
uninstall nogpu

log "CPU workers with the HPA (helm/examples/cpu.yaml)"
"$helm" install cpu "$chart" -n "$ns" -f helm/examples/cpu.yaml --wait --timeout 120s > /dev/null
expect_pods cpu worker cpu 2
[[ $(jp hpa/cpu-fusionstream-worker '{.spec.scaleTargetRef.kind}/{.spec.scaleTargetRef.name}') == Deployment/cpu-fusionstream-worker ]] ||
  fail "the HPA does not target the workers"
uninstall cpu

log "GPU workers with KEDA (helm/examples/gpu-keda.yaml)"
"$helm" install keda "$chart" -n "$ns" -f helm/examples/gpu-keda.yaml --wait --timeout 120s > /dev/null
expect_pods keda worker gpu 1
[[ $(jp scaledobject/keda-fusionstream-worker '{.spec.scaleTargetRef.name} {.spec.triggers[0].type}') == "keda-fusionstream-worker prometheus" ]] ||
  fail "the ScaledObject does not target the workers"
uninstall keda

log "exactly-once workers on a StatefulSet (helm/examples/exactly-once.yaml)"
"$helm" install eos "$chart" -n "$ns" -f helm/examples/exactly-once.yaml --wait --timeout 120s > /dev/null
expect_pods eos worker gpu 2
k get pod eos-fusionstream-worker-0 eos-fusionstream-worker-1 -o name > /dev/null ||
  fail "the exactly-once workers lack stable names"
uninstall eos

log "backfill: an indexed Job completing every index (helm/examples/backfill.yaml)"
cat <<PVC | k apply -f - > /dev/null
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: fusionstream-backfill}
spec:
  storageClassName: fusionstream-test
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 10Gi}}
PVC
"$helm" install bf "$chart" -n "$ns" -f helm/examples/backfill.yaml --wait --wait-for-jobs \
  --timeout 120s > /dev/null
job=job/bf-fusionstream-backfill
[[ $(jp $job '{.status.succeeded}/{.spec.completions} {.status.completedIndexes}') == "4/4 0-3" ]] ||
  fail "the Job did not complete every index: $(jp $job '{.status}')"
echo "   $job: $(jp $job '{.status.succeeded}/{.spec.completions} succeeded, indexes {.status.completedIndexes}')"
indexes=$(k get pods -l app.kubernetes.io/instance=bf \
  -o jsonpath='{range .items[*]}{.metadata.annotations.batch\.kubernetes\.io/job-completion-index}{"\n"}{end}' |
  sort -u | tr '\n' ' ')
[[ $indexes == "0 1 2 3 " ]] || fail "completion indexes of the pods: $indexes"
jp $job '{.spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath}' |
  grep -q "job-completion-index" || fail "the shard env does not come from the completion index"
jp $job '{.spec.template.spec.containers[0].env[1].value}' | grep -q 'shard-$(SHARD)/checkpoint.json' ||
  fail "the checkpoint path is not per shard"
[[ $(jp pvc/fusionstream-backfill '{.status.phase}') == Bound ]] || fail "the checkpoint claim is not bound"
[[ $(jp $job '{.spec.template.spec.volumes[?(@.name=="state")].persistentVolumeClaim.claimName}') == fusionstream-backfill ]] ||
  fail "the checkpoint claim is not mounted"
"$helm" uninstall bf -n "$ns" --wait --timeout 90s > /dev/null
# The claim is the user's (made before the install): deleted once its pods are gone.
k delete pvc fusionstream-backfill --wait --timeout 60s > /dev/null
[[ -z $(leftovers) ]] || fail "after helm uninstall bf, left behind: $(leftovers)"

log "the vector index: a StatefulSet with a claim per replica, its Service (helm/examples/index.yaml)"
"$helm" install ix "$chart" -n "$ns" -f helm/examples/index.yaml \
  --set index.persistence.storageClassName=fusionstream-test \
  --set index.persistence.whenDeleted=Delete --wait --timeout 120s > /dev/null
expect_pods ix worker gpu 2
expect_pods ix index cpu 2
for i in 0 1; do
  [[ $(jp "pvc/index-ix-fusionstream-index-$i" '{.status.phase}') == Bound ]] ||
    fail "index replica $i has no bound claim"
done
ready=$(k get endpointslices -l kubernetes.io/service-name=ix-fusionstream-index \
  -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.targetRef.name}{" "}{end}')
echo "   Service ix-fusionstream-index: ready endpoints $ready"
[[ $(wc -w <<<"$ready") == 2 ]] || fail "the index Service lacks its ready endpoints"
k get statefulset/ix-fusionstream-index -o jsonpath='{.spec.template.spec.containers[0].env}' |
  grep -q 's3://media/index/$(POD_NAME)' || fail "the snapshots are not per replica on S3"
uninstall ix

kubectl delete pv -l fusionstream-test=true > /dev/null
kubectl delete namespace "$ns" --wait > /dev/null
echo "chart on the cluster: passed"
