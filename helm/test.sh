#!/usr/bin/env bash
# Static checks of the chart: `helm lint --strict`, renderings with the default values, with
# every option on (HPA, KEDA, backfill Job, index, secrets, IRSA annotation) and with each
# values file of helm/examples/, each decoded strictly into the
# Kubernetes API types (helm/tests/validate: unknown fields, wrong types and bad quantities
# fail), the validator shown to reject a bad manifest, and every worker configuration the chart
# and its examples ship accepted by the worker itself (`fusionstream config`).
# helm/test-cluster.sh installs the same on a real API server.
# The chart's appVersion is the crate version (the image tag it defaults to).
# Helm (from the Go module proxy, scripts/helm-bin.sh) and the validator are built once into
# $HOME/.cache/fusionstream/bin. Usage: helm/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
helm=$(scripts/helm-bin.sh)
bin=$(dirname "$helm")
validate="$bin/helm-validate"
(cd helm/tests/validate && go build -o "$validate" .)

chart=helm/fusionstream
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/values-all-on.yaml" <<'VALUES'
autoscaling:
  kind: hpa
backfill:
  enabled: true
  checkpointClaim: fusionstream-backfill
index:
  enabled: true
  snapshots: s3://media/index/
serviceAccount:
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/fusionstream
secretEnv:
  - name: FUSIONSTREAM__KAFKA__SASL_PASSWORD
    secretName: kafka-credentials
    secretKey: password
env:
  - name: AWS_REGION
    value: eu-west-1
VALUES

echo "== appVersion = crate version"
crate=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
app=$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$chart/Chart.yaml")
[[ $crate == "$app" ]] || { echo "Chart.yaml appVersion $app != crate version $crate" >&2; exit 1; }

echo "== helm lint --strict"
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" -f "$work/values-all-on.yaml"

# readme: the `helm install` flags of the README's "Run in Kubernetes", verbatim, with the
# shipped configuration (rendered by "defaults", which comes first) as my-worker.toml.
for variant in defaults all-on keda backfill-only readme exactly-once; do
  case $variant in
    defaults) args=() ;;
    readme)
      cp "$work/defaults-cm/fs-fusionstream/config.toml" "$work/my-worker.toml"
      args=(--set image.repository=registry.example.com/media/fusionstream
      --set-file config="$work/my-worker.toml" --set autoscaling.kind=keda) ;;
    all-on) args=(-f "$work/values-all-on.yaml") ;;
    keda) args=(--set autoscaling.kind=keda) ;;
    backfill-only) args=(--set worker.enabled=false --set backfill.enabled=true) ;;
    exactly-once)
      # The shipped configuration with exactly-once delivery, on stable pod names.
      sed 's/^\[kafka\]$/[kafka]\ndelivery = "exactly_once"/' \
        "$work/defaults-cm/fs-fusionstream/config.toml" > "$work/eos.toml"
      args=(--set worker.stableIdentity=true --set autoscaling.kind=keda
      --set-file config="$work/eos.toml") ;;
  esac
  echo "== helm template ($variant)"
  "$helm" template fs "$chart" --namespace media "${args[@]}" > "$work/$variant.yaml"
  "$validate" -configmaps "$work/$variant-cm" < "$work/$variant.yaml"
done
for values in helm/examples/*.yaml; do
  variant=example-$(basename "$values" .yaml)
  echo "== helm lint + template ($variant)"
  "$helm" lint --strict --quiet "$chart" -f "$values"
  "$helm" template fs "$chart" --namespace media -f "$values" > "$work/$variant.yaml"
  "$validate" -configmaps "$work/$variant-cm" < "$work/$variant.yaml"
done
grep -q "kind: HorizontalPodAutoscaler" "$work/all-on.yaml"
grep -q "name: fs-fusionstream-index" "$work/all-on.yaml"
! grep -q "nvidia.com/gpu" "$work/example-cpu.yaml"
[[ $(grep -c "nvidia.com/gpu: 1" "$work/defaults.yaml") == 2 ]] # requested and limited
grep -q "completionMode: Indexed" "$work/all-on.yaml"
grep -q "kind: ScaledObject" "$work/keda.yaml"
grep -q "image: registry.example.com/media/fusionstream:$crate-cuda" "$work/readme.yaml"
grep -q 'bootstrap_servers = "kafka:9092"' "$work/readme.yaml"
! grep -q "kind: Deployment" "$work/backfill-only.yaml"
grep -q "kind: StatefulSet" "$work/exactly-once.yaml"
! grep -q "kind: Deployment" "$work/exactly-once.yaml"
grep -q 'delivery = "exactly_once"' "$work/exactly-once.yaml"
[[ $(grep -c "kind: StatefulSet" "$work/exactly-once.yaml") == 2 ]] # the workers and KEDA's target

echo "== the validator rejects a bad manifest"
sed 's/terminationGracePeriodSeconds:/terminationGracePeriod:/' "$work/defaults.yaml" > "$work/bad.yaml"
if "$validate" < "$work/bad.yaml" > /dev/null 2> "$work/bad.err"; then
  echo "the validator accepted an unknown field" >&2
  exit 1
fi
grep -q 'unknown field' "$work/bad.err"

echo "== the shipped worker configurations, as the worker reads them"
# The defaults run the model on a GPU; this binary may be a CPU build, so the check runs with
# the device overridden (every other key is validated as shipped).
# The binary `cargo test --workspace` left in the target dir (as the image test does; run
# alone, build it first): `cargo run -p fusionstream` resolves the package's features without
# the workspace's dev-dependencies and compiled it a second time (4.5 min of a cold run).
binary="${CARGO_TARGET_DIR:-target}/debug/fusionstream"
[[ -x $binary ]] || cargo build -q --locked -p fusionstream
for cm in "$work"/*-cm/fs-fusionstream/config.toml; do
  FUSIONSTREAM__MODEL__DEVICE=cpu "$binary" config --config "$cm" > /dev/null ||
    { echo "rejected: $cm" >&2; exit 1; }
done
echo "chart checks passed"
