"""The local stack of the order platform: development, tests and benchmarks only.

Never installed in production (the image and ``pip install .`` leave it out).
``make venv`` installs it editable beside the runtime:

- :mod:`devstack.paths` — where the repository, its ``.data/`` and tools are;
- :mod:`devstack.supervisor` — the one process supervisor (spawn, output,
  check-alive, ordered stop, kill) behind ``make run``, the benchmarks and
  the tests' process fixtures;
- :mod:`devstack.readiness` — waiting for a port or an HTTP endpoint;
- :mod:`devstack.postgres` — an embedded PostgreSQL server;
- :mod:`devstack.emulators` — SQS emulators (moto server, fauxqs);
- :mod:`devstack.tokens` — test and benchmark token signing and a JWKS server;
- :mod:`devstack.bench` — the benchmarks' stack, load generators, samplers and tables.

Queue creation and migrations are not here: they are needed in production
too, so they live in the runtime (:mod:`shared.bootstrap`).
"""
