#!/usr/bin/env bash
# Validates the deployment files with tools that run without a container engine:
#   - yamllint: every YAML parses (relaxed style rules);
#   - kubernetes-validate --strict: the Kubernetes manifests against the API schemas;
#   - a structural check of the KEDA resources (their CRD schemas are not bundled);
#   - docker-compose config: the Compose file against the Compose schema.
# The Dockerfile is built where an engine is available: docker build -f deploy/Dockerfile .
set -euo pipefail
cd "$(dirname "$0")/.."

find deploy -name '*.yaml' -not -name '.yamllint.yaml' -print0 \
  | xargs -0 python3 -m yamllint -c deploy/.yamllint.yaml --strict

python3 -m kubernetes_validate --strict --quiet \
  deploy/k8s/configmap.yaml deploy/k8s/secret.example.yaml deploy/k8s/deployment.yaml \
  deploy/k8s/pdb.yaml deploy/k8s/migration-job.yaml

python3 - <<'PY'
import sys, yaml
docs = list(yaml.safe_load_all(open("deploy/k8s/keda-scaledobject.yaml")))
deployment = yaml.safe_load(open("deploy/k8s/deployment.yaml"))
config = yaml.safe_load(open("deploy/k8s/configmap.yaml"))
so = next(d for d in docs if d["kind"] == "ScaledObject")
auth = next(d for d in docs if d["kind"] == "TriggerAuthentication")
errors = []
if so["apiVersion"] != "keda.sh/v1alpha1": errors.append("ScaledObject apiVersion")
if so["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]: errors.append("scaleTargetRef does not name the Deployment")
trigger = so["spec"]["triggers"][0]
if trigger["type"] != "rabbitmq": errors.append("trigger type")
if trigger["metadata"]["queueName"] != config["data"]["CAPTURE__AMQP__QUEUE"]: errors.append("queueName differs from the worker's queue")
if trigger["authenticationRef"]["name"] != auth["metadata"]["name"]: errors.append("authenticationRef")
if so["spec"]["minReplicaCount"] < 1: errors.append("minReplicaCount")
if errors:
    sys.exit("KEDA resources: " + "; ".join(errors))
grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
if grace <= 20:
    sys.exit("terminationGracePeriodSeconds must exceed the worker's 20 s drain")
print("KEDA resources and grace period: ok")
PY

docker-compose -f deploy/compose.yaml config -q
echo "deploy files: ok"

# Prometheus alert rules: `promtool check rules` (Debian package `prometheus`) checks their
# syntax, PromQL and templates, as committed and as rendered with a runbook base URL
# (docs/runbook.md, "Alerts"). Skipped, saying so, where promtool is not installed.
if command -v promtool >/dev/null 2>&1; then
  promtool check rules deploy/prometheus/alerts.yaml
  CAPTURE_WORKER_RUNBOOK_BASE_URL=https://runbooks.example.invalid \
    envsubst '${CAPTURE_WORKER_RUNBOOK_BASE_URL}' <deploy/prometheus/alerts.yaml \
    | promtool check rules /dev/stdin
  echo "alert rules: ok"
else
  echo "alert rules: promtool not installed (apt-get install prometheus), not checked" >&2
fi
