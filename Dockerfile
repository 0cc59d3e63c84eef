# Two stages: the builder installs the hashed serving lock into a venv; the final image holds
# only that venv on a slim Python, runs as an unprivileged user and has no compiler or pip cache.
# Every package in requirements.lock ships a manylinux wheel for CPython 3.11, so the builder
# needs no build tools either.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# The lock alone first, so editing the code does not invalidate the dependency layer.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY configs ./configs
# The project cannot be hashed: its dependencies are already the lock (--no-deps) and it is built
# with the setuptools pinned in that lock (--no-build-isolation), so nothing unpinned is fetched.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 game-api \
    && useradd --system --uid 10001 --gid game-api --home-dir /srv/game-api --create-home \
       --shell /usr/sbin/nologin game-api
COPY --from=builder /opt/venv /opt/venv
# The default SQLite database (./game-api.db) lands here, owned by the service user.
WORKDIR /srv/game-api
USER game-api:game-api
EXPOSE 8000
# urllib rather than curl: the slim image has no curl, and installing one would add a package
# only for this. /livez answers without touching the database or Redis, so a slow dependency
# does not get a live process restarted.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
CMD ["game-api", "serve", "--host", "0.0.0.0", "--workers", "2"]
