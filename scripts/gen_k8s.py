"""Generate the Kubernetes manifests (kustomize base + overlays) and their rendered form.

Everything is derived from the one service list (``shared/services.py``), the
queue topology (``shared/queues.py``) and the settings declarations (each
service's ``settings.py``, ``shared/config.py``, ``infra/gunicorn.conf.py``):

- ``infra/k8s/base/``: a namespace, one ConfigMap per settings scope holding
  every declared non-secret variable (empty value: the declared default
  applies, since an empty variable counts as unset), and per service a
  ServiceAccount, an API Deployment + Service + PodDisruptionBudget + HPA,
  and, when it has a worker, a worker Deployment + PodDisruptionBudget + KEDA
  ScaledObject (one ``aws-sqs-queue`` trigger per consumed queue) +
  TriggerAuthentication (pod identity); a migrations Job. The secret
  variables are read from Secrets that the overlays provide.
- ``infra/k8s/overlays/local``: the emulators in the cluster (ElasticMQ with
  the generated ``elasticmq.conf``, PostgreSQL 16, data not kept), the
  services pointed at them, development Secrets, static emulator credentials
  for KEDA, and the auth-setup Job registering the order service's client.
- ``infra/k8s/overlays/aws``: IRSA role annotations on the service accounts,
  the image from ECR; the Secrets come from the secret store (RDS URL etc.).
- ``infra/k8s/rendered/{local,aws}.yaml``: each overlay applied to the base,
  the way ``kubectl apply -k`` would (kustomize is not needed to read or test
  them).

Plain manifests with kustomize rather than a Helm chart: the differences
between environments are a few values (endpoints, annotations, Secrets), the
manifests stay readable and diffable as they are applied, and the rendered
files can be validated against the schemas without a template engine.
Overlays only use strategic-merge patches that merge maps and replace whole
lists in custom resources (and none on lists of built-in kinds), which is
exactly what :func:`merge` does, so the rendered files are what kustomize
renders.

``tests/unit/test_k8s_manifests.py`` fails when a committed file differs from
this output, and validates every rendered object against the Kubernetes and
KEDA schemas. Usage: ``python scripts/gen_k8s.py [--check]`` (``make k8s``).
"""

from __future__ import annotations

import copy
import runpy
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

import click  # noqa: E402

from devstack.generated import sync  # noqa: E402
from services.auth.settings import AuthSettings  # noqa: E402
from services.delivery.settings import DeliverySettings  # noqa: E402
from services.inventory.settings import InventorySettings  # noqa: E402
from services.notification.settings import SETTINGS_CLASSES as NOTIFICATION_CLASSES  # noqa: E402
from services.ops.settings import OpsSettings  # noqa: E402
from services.ops.web_settings import WebSettings  # noqa: E402
from services.order.settings import OrderSettings  # noqa: E402
from services.payment.settings import PaymentSettings  # noqa: E402
from shared.config import SQS_EMULATOR_PORT, BreakerThresholds, Settings, WorkerSettings  # noqa: E402
from shared.messaging.sqs import physical_name  # noqa: E402
from shared.queues import TOPOLOGY  # noqa: E402
from shared.services import SERVICES, Service, with_migrations  # noqa: E402

K8S_DIR = REPO_ROOT / "infra" / "k8s"
NAMESPACE = "order-platform"
IMAGE = "order-platform"
IMAGE_TAG = "0.1.0"  # the project's version (pyproject.toml)
# The image's numeric non-root user (Dockerfile).
UID = 10001
# Workers serve their Prometheus metrics on every interface of the pod
# (WORKER_METRICS_HOST) so Prometheus can scrape them; the probes run
# infra/healthcheck.py inside the container against the same port.
WORKER_METRICS_PORT = 9100
WORKER_METRICS_HOST = "0.0.0.0"
# An API's gunicorn processes share their metrics through files here
# (shared/metrics_export.py): a memory-backed emptyDir, the root filesystem being read-only.
METRICS_DIR = "/run/prometheus-multiproc"
METRICS_DIR_SIZE = "32Mi"
# The deployment's account and region: set them here and rerun `make k8s`.
AWS_ACCOUNT_ID = "111122223333"
AWS_REGION = "us-east-1"
# QUEUE_PREFIX of this deployment (the stack's QueuePrefix parameter).
QUEUE_PREFIX = ""
# Production requires the mail sender to be set (services/notification/settings.py):
# an identity verified in SES for the notification role; set it with the account.
EMAIL_FROM = "Order Platform <no-reply@shop.example>"
ELASTICMQ_ACCOUNT = "000000000000"  # ElasticMQ's default account (elasticmq.conf)
ELASTICMQ_URL = f"http://elasticmq:{SQS_EMULATOR_PORT}"
# KEDA's operator runs in its own namespace: it needs the Service's full name.
ELASTICMQ_KEDA_URL = f"http://elasticmq.{NAMESPACE}.svc:{SQS_EMULATOR_PORT}"
LOCAL_DATABASE_URL = "postgresql://orders:orders@postgres:5432/orders"
# KEDA's target: visible messages per worker replica. One replica keeps
# CONSUMER_POLLERS (2) x CONSUMER_MAX_MESSAGES (10) = 20 messages in hand per
# queue, so a backlog above 20 per replica adds replicas.
QUEUE_LENGTH_TARGET = 20
WORKER_MAX_REPLICAS = 10
API_MIN_REPLICAS, API_MAX_REPLICAS, API_CPU_TARGET = 2, 10, 70
DATABASE_SECRET = "platform-database"
SQS_EMULATOR_SECRET = "sqs-emulator-credentials"
# boto3's own variables (not declared settings): static credentials for the emulator only.
EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local-dev", "AWS_SECRET_ACCESS_KEY": "local-dev"}
# The local overlay's development secret for the order service's client; the
# auth-setup Job registers the client with it (as docker-compose does).
LOCAL_ORDER_CLIENT_SECRET = "local-dev-order-service-secret-0123456789"
# The secrets every service reads (platform scope, DATABASE_URL aside: it has its own).
PLATFORM_SECRET = "platform-secrets"

SERVICE_SETTINGS = {
    "order": (OrderSettings,),
    "delivery": (DeliverySettings,),
    "inventory": (InventorySettings,),
    "notification": tuple(NOTIFICATION_CLASSES),
    "auth": (AuthSettings,),
    "payment": (PaymentSettings,),
    "ops": (OpsSettings, WebSettings),
}


def gunicorn_settings():
    """The settings class declared in infra/gunicorn.conf.py (a config file, not a module)."""
    return runpy.run_path(str(REPO_ROOT / "infra" / "gunicorn.conf.py"))["GunicornSettings"]


def declared(classes) -> dict[str, bool]:
    """Variable -> whether it is secret, for every concrete variable of ``classes``."""
    out: dict[str, bool] = {}
    for cls in classes:
        for variable, field_name in cls.variables().items():
            if "<" in variable:  # a pattern (BREAKER_<NAME>_*): no single variable to wire
                continue
            extra = cls.model_fields[field_name].json_schema_extra or {}
            out[variable] = bool(extra.get("secret"))
    return out


def scopes() -> dict[str, dict[str, bool]]:
    """ConfigMap scope -> its variables (secret or not)."""
    # The peers' base URLs (<NAME>_URL, from shared/services.py) are read by
    # shared.config.load_settings beside the declared fields.
    peers = {s.url_variable: False for s in SERVICES}
    out = {
        "platform": {**declared((Settings, BreakerThresholds)), **peers},
        "worker": declared((WorkerSettings,)),
        "api": declared((gunicorn_settings(),)),
    }
    for name, classes in SERVICE_SETTINGS.items():
        out[name] = declared(classes)
    return out


def base_values() -> dict[str, dict[str, str]]:
    """What the base sets explicitly, per scope (everything else: the declared default)."""
    peers = {s.url_variable: f"http://{s.name}-api:{s.port}" for s in SERVICES}
    return {
        "platform": {"APP_ENV": "production", "AWS_REGION": AWS_REGION, "QUEUE_PREFIX": QUEUE_PREFIX,
                     "LOG_FORMAT": "json",
                     "LOG_LEVEL": "INFO", **peers},
        "worker": {"WORKER_METRICS_PORT": str(WORKER_METRICS_PORT),
                   "WORKER_METRICS_HOST": WORKER_METRICS_HOST},
        # Behind the cluster's load balancer or ingress: trust its X-Forwarded-* headers.
        "api": {"FORWARDED_ALLOW_IPS": "*", "PROMETHEUS_MULTIPROC_DIR": METRICS_DIR},
        "order": {"ORDER_CLIENT_ID": "order-service"},
        # Required in production; mail goes through SES with the notification role.
        "notification": {"NOTIFICATION_EMAIL_PROVIDER": "ses", "NOTIFICATION_EMAIL_FROM": EMAIL_FROM},
    }


def meta(name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "order-platform", **labels}}


def config_maps() -> list[dict[str, Any]]:
    values = base_values()
    docs = []
    for scope, variables in scopes().items():
        data = {v: values.get(scope, {}).get(v, "") for v in sorted(variables) if not variables[v]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{scope}-config"),
                     "data": data})
    return docs


def secret_variables(scope: str) -> list[str]:
    return sorted(v for v, secret in scopes()[scope].items() if secret and v != "DATABASE_URL")


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "runAsUser": UID, "capabilities": {"drop": ["ALL"]}}


def _env_from(svc: Service, process_scope: str) -> list[dict[str, Any]]:
    refs = [{"configMapRef": {"name": "platform-config"}},
            {"configMapRef": {"name": f"{process_scope}-config"}},
            {"configMapRef": {"name": f"{svc.name}-config"}}]
    if secret_variables(svc.name):
        refs.append({"secretRef": {"name": f"{svc.name}-secrets"}})
    if secret_variables("platform"):  # e.g. AUTH_REVOCATION_FEED_KEY: the same in every service
        refs.append({"secretRef": {"name": PLATFORM_SECRET}})
    # Present only in the local overlay (the emulator's static credentials); on AWS
    # the pod's service account role (IRSA) is used and no such Secret exists.
    refs.append({"secretRef": {"name": SQS_EMULATOR_SECRET, "optional": True}})
    return refs


def _database_env() -> list[dict[str, Any]]:
    return [{"name": "DATABASE_URL",
             "valueFrom": {"secretKeyRef": {"name": DATABASE_SECRET, "key": "DATABASE_URL"}}}]


def uses_queues(name: str) -> bool:
    """Whether service ``name`` sends to or consumes a queue (so has an AWS role)."""
    return any(q.producer == name or name in q.consumers for q in TOPOLOGY)


def _pod(svc_account: str, container: dict[str, Any], grace_s: int,
         volumes: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "serviceAccountName": svc_account,
        # IRSA's web identity token comes with it: only for the pods that call AWS.
        "automountServiceAccountToken": uses_queues(svc_account),
        "terminationGracePeriodSeconds": grace_s,
        "securityContext": _pod_security(),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, *volumes],
    }


def _container(name: str, command: list[str], env: list[dict[str, Any]], env_from, resources,
               mounts: tuple[dict[str, Any], ...] = (), **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": f"{IMAGE}:{IMAGE_TAG}", "imagePullPolicy": "IfNotPresent",
            "command": command, "env": env, "envFrom": env_from, **extra,
            "resources": resources, "securityContext": _container_security(),
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts]}


def _scrape_annotations(port: int) -> dict[str, str]:
    # The annotations the common Prometheus Kubernetes pod discovery reads.
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics"}


def _deployment(name: str, component: str, svc: Service, pod: dict[str, Any],
                annotations: dict[str, str] | None = None) -> dict[str, Any]:
    # No replicas: the HPA (APIs) or KEDA (workers) owns the count, and a re-apply
    # must not reset it.
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
              "app.kubernetes.io/instance": svc.name}
    template_meta: dict[str, Any] = {"labels": labels}
    if annotations:
        template_meta["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, **labels),
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": {"metadata": template_meta, "spec": pod}}}


def _pdb(name: str, **budget: Any) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name),
            "spec": {**budget, "selector": {"matchLabels": {"app.kubernetes.io/name": name}}}}


def api_objects(svc: Service) -> list[dict[str, Any]]:
    name = f"{svc.name}-api"
    probe = {"httpGet": {"path": "/health/live", "port": "http"}, "periodSeconds": 10,
             "timeoutSeconds": 3, "failureThreshold": 3}
    container = _container(
        "api", ["gunicorn", "-c", "infra/gunicorn.conf.py", *svc.gunicorn_args, svc.app],
        [*_database_env(), {"name": "PORT", "value": str(svc.port)}], _env_from(svc, "api"),
        {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        mounts=({"name": "metrics", "mountPath": METRICS_DIR},),
        ports=[{"name": "http", "containerPort": svc.port, "protocol": "TCP"}],
        readinessProbe={"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 5,
                        "timeoutSeconds": 3, "failureThreshold": 3},
        livenessProbe=probe,
        startupProbe={**probe, "periodSeconds": 2, "failureThreshold": 30})
    metrics_volume = {"name": "metrics", "emptyDir": {"medium": "Memory", "sizeLimit": METRICS_DIR_SIZE}}
    deployment = _deployment(name, "api", svc, _pod(svc.name, container, 15, (metrics_volume,)),
                             _scrape_annotations(svc.port))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
               "spec": {"selector": {"app.kubernetes.io/name": name},
                        "ports": [{"name": "http", "port": svc.port, "targetPort": "http"}]}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta(name),
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": API_MIN_REPLICAS, "maxReplicas": API_MAX_REPLICAS,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization",
                                                  "averageUtilization": API_CPU_TARGET}}}]}}
    return [deployment, service, _pdb(name, minAvailable=1), hpa]


def queue_url(name: str, local: bool) -> str:
    name = physical_name(QUEUE_PREFIX, name)
    if local:
        return f"{ELASTICMQ_KEDA_URL}/{ELASTICMQ_ACCOUNT}/{name}"
    return f"https://sqs.{AWS_REGION}.amazonaws.com/{AWS_ACCOUNT_ID}/{name}"


def triggers(svc: Service, local: bool) -> list[dict[str, Any]]:
    out = []
    for spec in TOPOLOGY.consumed_by(svc.name):
        metadata = {"queueURL": queue_url(spec.name, local), "queueLength": str(QUEUE_LENGTH_TARGET),
                    "awsRegion": AWS_REGION}
        if local:
            metadata["awsEndpoint"] = ELASTICMQ_KEDA_URL
        out.append({"type": "aws-sqs-queue", "name": spec.name.replace(".", "-"),
                    "authenticationRef": {"name": f"{svc.name}-worker-sqs"}, "metadata": metadata})
    return out


def worker_objects(svc: Service) -> list[dict[str, Any]]:
    name = f"{svc.name}-worker"
    # infra/healthcheck.py probes WORKER_METRICS_PORT (worker-config), as the image's HEALTHCHECK does.
    check = ["python", "infra/healthcheck.py"]
    probe = {"exec": {"command": check}, "periodSeconds": 15, "timeoutSeconds": 5,
             "failureThreshold": 4}
    container = _container(
        "worker", ["python", "-m", svc.worker], _database_env(), _env_from(svc, "worker"),
        {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"cpu": "500m", "memory": "384Mi"}},
        ports=[{"name": "metrics", "containerPort": WORKER_METRICS_PORT, "protocol": "TCP"}],
        readinessProbe=probe, livenessProbe=probe,
        startupProbe={**probe, "periodSeconds": 2, "failureThreshold": 30})
    # A long poll ends within 20 s, then in-flight handlers get WORKER_SHUTDOWN_TIMEOUT_S.
    deployment = _deployment(name, "worker", svc, _pod(svc.name, container, 45),
                             _scrape_annotations(WORKER_METRICS_PORT))
    scaled = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta(name),
        "spec": {
            "scaleTargetRef": {"name": name},
            # Never zero: the worker also runs the outbox relay, which must keep publishing.
            "minReplicaCount": 1,
            "maxReplicaCount": WORKER_MAX_REPLICAS,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": triggers(svc, local=False),
        },
    }
    auth = {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": meta(f"{name}-sqs"),
            # KEDA reads the queue depth as the worker itself: its IRSA role may GetQueueAttributes.
            "spec": {"podIdentity": {"provider": "aws", "identityOwner": "workload"}}}
    return [deployment, _pdb(name, maxUnavailable=1), scaled, auth]


def migrations_job() -> dict[str, Any]:
    container = _container(
        "migrate", ["python", "-m", "shared.bootstrap", "--skip-queues", *with_migrations()],
        _database_env(), [{"configMapRef": {"name": "platform-config"}}],
        {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}})
    pod = {**_pod("migrations", container, 30), "restartPolicy": "OnFailure"}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": meta("migrations", **{"app.kubernetes.io/component": "migrations"}),
            "spec": {"backoffLimit": 3, "ttlSecondsAfterFinished": 86400,
                     "template": {"metadata": {"labels": {"app.kubernetes.io/name": "migrations"}},
                                  "spec": pod}}}


def service_account(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name)}


def base_files() -> dict[str, list[dict[str, Any]]]:
    files = {"namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": NAMESPACE}}],
             "config.yaml": config_maps(),
             "migrations.yaml": [service_account("migrations"), migrations_job()]}
    for svc in SERVICES:
        docs = [service_account(svc.name), *api_objects(svc)]
        if svc.worker is not None:
            docs += worker_objects(svc)
        files[f"{svc.name}.yaml"] = docs
    return files


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta(name), "type": "Opaque",
            "stringData": data}


def _patch(doc: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": doc["apiVersion"], "kind": doc["kind"],
            "metadata": {"name": doc["metadata"]["name"], "namespace": NAMESPACE}, **body}


ELASTICMQ_IMAGE = "softwaremill/elasticmq-native:1.7.1"  # as docker-compose.yml
POSTGRES_IMAGE = "postgres:16"
POSTGRES_UID = 999  # the postgres user of the official image


def _emulator(name: str, image: str, port: int, uid: int, env: list[dict[str, Any]],
              mounts: list[dict[str, Any]], volumes: list[dict[str, Any]], probe: dict[str, Any],
              memory: str) -> list[dict[str, Any]]:
    """An in-cluster emulator for the local overlay: Deployment + Service (data is not kept)."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "emulator"}
    container = {"name": name, "image": image, "env": env,
                 "ports": [{"name": "main", "containerPort": port}],
                 "readinessProbe": {**probe, "periodSeconds": 2},
                 "livenessProbe": {**probe, "periodSeconds": 10},
                 "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                               "limits": {"cpu": "1", "memory": memory}},
                 "securityContext": {**_container_security(), "runAsUser": uid},
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts]}
    pod = {"securityContext": {**_pod_security(), "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid},
           "containers": [container],
           "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, **labels),
                  "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                           "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                           "template": {"metadata": {"labels": labels}, "spec": pod}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
               "spec": {"selector": {"app.kubernetes.io/name": name},
                        "ports": [{"name": "main", "port": port, "targetPort": "main"}]}}
    return [deployment, service]


def emulators() -> list[dict[str, Any]]:
    """ElasticMQ with the generated elasticmq.conf, and PostgreSQL 16, for the local overlay."""
    conf = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("elasticmq-config"),
            "data": {"elasticmq.conf": (REPO_ROOT / "elasticmq.conf").read_text()}}
    elasticmq = _emulator(
        "elasticmq", ELASTICMQ_IMAGE, SQS_EMULATOR_PORT, UID, [],
        [{"name": "conf", "mountPath": "/opt/elasticmq.conf", "subPath": "elasticmq.conf"}],
        [{"name": "conf", "configMap": {"name": "elasticmq-config"}}],
        {"tcpSocket": {"port": "main"}}, "256Mi")
    postgres = _emulator(
        "postgres", POSTGRES_IMAGE, 5432, POSTGRES_UID,
        [{"name": "POSTGRES_USER", "value": "orders"}, {"name": "POSTGRES_PASSWORD", "value": "orders"},
         {"name": "POSTGRES_DB", "value": "orders"},
         {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
        [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
         {"name": "run", "mountPath": "/var/run/postgresql"}],
        [{"name": "data", "emptyDir": {}}, {"name": "run", "emptyDir": {}}],
        {"exec": {"command": ["pg_isready", "-U", "orders", "-d", "orders"]}}, "512Mi")
    return [conf, *elasticmq, *postgres]


def local_overlay() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(extra resources, patches, kustomization extras) of the emulator overlay."""
    resources = [
        *emulators(),
        _secret(DATABASE_SECRET, {"DATABASE_URL": LOCAL_DATABASE_URL}),
        _secret(SQS_EMULATOR_SECRET, dict(EMULATOR_CREDENTIALS)),
    ]
    if secret_variables("platform"):
        # Empty: the development default applies (APP_ENV=development below).
        resources.append(_secret(PLATFORM_SECRET, {v: "" for v in secret_variables("platform")}))
    for svc in SERVICES:
        variables = secret_variables(svc.name)
        if variables:
            # Empty: the development default applies (APP_ENV=development below).
            values = {v: "" for v in variables}
            if svc.name == "order":
                values["ORDER_CLIENT_SECRET"] = LOCAL_ORDER_CLIENT_SECRET
            resources.append(_secret(f"{svc.name}-secrets", values))
    setup = copy.deepcopy(migrations_job())
    setup["metadata"] = meta("auth-setup", **{"app.kubernetes.io/component": "setup"})
    container = setup["spec"]["template"]["spec"]["containers"][0]
    container.update(name="auth-setup", command=[
        "python", "-m", "services.auth.cli", "ensure-client", "--client-id", "order-service",
        "--name", "Order service", "--scope", "inventory:reserve", "--scope", "payments:create",
        "--scope", "shipments:cancel", "--secret-env", "ORDER_CLIENT_SECRET"])
    container["envFrom"] = [{"configMapRef": {"name": "platform-config"}},
                            {"configMapRef": {"name": "auth-config"}},
                            {"secretRef": {"name": "auth-secrets"}},
                            {"secretRef": {"name": "order-secrets"}}]
    setup["spec"]["template"]["metadata"]["labels"] = {"app.kubernetes.io/name": "auth-setup"}
    resources.append(setup)
    base = {(d["kind"], d["metadata"]["name"]): d for docs in base_files().values() for d in docs}
    patches = [
        _patch(base[("ConfigMap", "platform-config")], {"data": {
            "APP_ENV": "development", "SQS_ENDPOINT_URL": ELASTICMQ_URL}}),
        _patch(base[("ConfigMap", "delivery-config")], {"data": {
            "DELIVERY_SIMULATOR_ENABLED": "true"}}),
        _patch(base[("ConfigMap", "notification-config")], {"data": {
            "NOTIFICATION_EMAIL_PROVIDER": "console"}}),
    ]
    for svc in SERVICES:
        if svc.worker is None:
            continue
        patches.append(_patch(base[("ScaledObject", f"{svc.name}-worker")],
                              {"spec": {"triggers": triggers(svc, local=True)}}))
        patches.append(_patch(base[("TriggerAuthentication", f"{svc.name}-worker-sqs")], {"spec": {
            "podIdentity": {"provider": "none"},
            "secretTargetRef": [
                {"parameter": "awsAccessKeyID", "name": SQS_EMULATOR_SECRET, "key": "AWS_ACCESS_KEY_ID"},
                {"parameter": "awsSecretAccessKey", "name": SQS_EMULATOR_SECRET,
                 "key": "AWS_SECRET_ACCESS_KEY"},
            ]}}))
    return resources, patches, {}


def aws_overlay() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """IRSA roles on the service accounts and the ECR image; Secrets come from outside."""
    patches = []
    for svc in SERVICES:
        if not uses_queues(svc.name):
            continue  # no queue, so no queue policy (auth): it keeps no AWS identity
        # The role carries the service's managed policy from infra/sqs-queues.cfn.yaml.
        role = f"arn:aws:iam::{AWS_ACCOUNT_ID}:role/order-platform-{svc.name}"
        patches.append(_patch(service_account(svc.name), {"metadata": {
            "name": svc.name, "namespace": NAMESPACE,
            "annotations": {"eks.amazonaws.com/role-arn": role}}}))
    images = {"images": [{"name": IMAGE,
                          "newName": f"{AWS_ACCOUNT_ID}.dkr.ecr.{AWS_REGION}.amazonaws.com/{IMAGE}",
                          "newTag": IMAGE_TAG}]}
    return [], patches, images


OVERLAYS = {"local": local_overlay, "aws": aws_overlay}


# ------------------------------------------------------------------ rendering


def merge(target: Any, patch: Any) -> Any:
    """A strategic-merge patch as the overlays use it: maps merge, lists are replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for key, value in patch.items():
            out[key] = merge(target[key], value) if key in target else copy.deepcopy(value)
        return out
    return copy.deepcopy(patch)


def _has_list(value: Any) -> bool:
    if isinstance(value, list):
        return True
    return isinstance(value, dict) and any(_has_list(v) for v in value.values())


def render(overlay: str) -> list[dict[str, Any]]:
    """Every object of ``overlay``: the base, its resources, its patches and images applied."""
    resources, patches, extras = OVERLAYS[overlay]()
    docs = [copy.deepcopy(d) for files in base_files().values() for d in files] + resources
    index = {(d["kind"], d["metadata"]["name"]): i for i, d in enumerate(docs)}
    for patch in patches:
        key = (patch["kind"], patch["metadata"]["name"])
        if "." not in patch["apiVersion"].split("/")[0] or patch["apiVersion"].startswith("apps/"):
            # Built-in kinds merge some lists by key in kustomize; these patches stay off lists.
            assert not _has_list({k: v for k, v in patch.items() if k != "metadata"}), key
        docs[index[key]] = merge(docs[index[key]], patch)
    for image in extras.get("images", []):
        for doc in docs:
            for container in _pod_spec(doc).get("containers", []):
                name, _, _tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def dump(docs: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in docs)


HEADER = ("# generated by scripts/gen_k8s.py from shared/services.py, shared/queues.py"
          " and the settings; do not edit\n")


def files() -> dict[Path, str]:
    """Every generated file and its text."""
    out: dict[Path, str] = {}
    base = base_files()
    for name, docs in base.items():
        out[K8S_DIR / "base" / name] = HEADER + dump(docs)
    out[K8S_DIR / "base" / "kustomization.yaml"] = HEADER + yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": list(base)}, sort_keys=False)
    for overlay, build in OVERLAYS.items():
        resources, patches, extras = build()
        directory = K8S_DIR / "overlays" / overlay
        kustomization: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                                         "kind": "Kustomization", "resources": ["../../base"]}
        if resources:
            out[directory / "resources.yaml"] = HEADER + dump(resources)
            kustomization["resources"].append("resources.yaml")
        paths = []
        for patch in patches:
            path = f"patches/{patch['kind'].lower()}-{patch['metadata']['name']}.yaml"
            out[directory / path] = HEADER + dump([patch])
            paths.append({"path": path})
        if paths:
            kustomization["patches"] = paths
        kustomization.update(extras)
        out[directory / "kustomization.yaml"] = HEADER + yaml.safe_dump(kustomization, sort_keys=False)
        out[K8S_DIR / "rendered" / f"{overlay}.yaml"] = HEADER + dump(render(overlay))
    return out


@click.command()
@click.option("--check", is_flag=True, help="Exit 1 if a file differs instead of writing it.")
def main(check: bool) -> None:
    """Write (or check) infra/k8s/."""
    expected = files()
    stale = [path for path, text in expected.items() if sync(path, text, check, REPO_ROOT)]
    generated = {p for p in K8S_DIR.rglob("*.yaml") if "schemas" not in p.parts}
    for path in sorted(generated - set(expected)):
        if check:
            stale.append(path)
            click.echo(f"{path.relative_to(REPO_ROOT)}: not generated any more", err=True)
        else:
            path.unlink()
            click.echo(f"{path.relative_to(REPO_ROOT)}: deleted")
    if stale:
        sys.exit(1)
    click.echo(f"infra/k8s: {len(expected)} files up to date" if check else "infra/k8s: done")


if __name__ == "__main__":
    main()
