# One image for every service; docker-compose (or the orchestrator) picks the
# command: the API (gunicorn), the worker, or the one-shot bootstrap.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first, in a layer that changes only with pyproject.toml or the
# lock: install the project's dependency set (every version pinned by
# requirements.lock) from an empty package tree, then drop the project itself.
# Only the runtime's dependencies: the local stack (devstack/: embedded
# PostgreSQL, moto, test tokens) is another distribution and never installed here.
COPY pyproject.toml requirements.lock ./
RUN mkdir -p shared services \
    && touch shared/__init__.py services/__init__.py \
    && pip install -c requirements.lock . \
    && pip uninstall -y order-platform \
    && rm -rf shared services build ./*.egg-info

# The code runs from /app (PYTHONPATH): migrations are found beside it.
COPY shared/ shared/
COPY services/ services/
COPY infra/ infra/

RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent app
USER app

# Default: show the command-line of the bootstrap; compose sets the real one, e.g.
#   gunicorn -c infra/gunicorn.conf.py "services.order.app:create_app()"
#   python -m services.order.worker
#   python -m shared.bootstrap --skip-queues
CMD ["python", "-m", "shared.bootstrap", "--help"]
