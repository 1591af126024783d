# Treecast worker image. The install steps mirror the Makefile's `install` target
# (a venv filled from requirements.lock), so the image runs what CI tested. It takes
# the runtime lock only: the Makefile adds requirements-dev.lock (tests, linters, a
# PostgreSQL for the tests) on top, and none of that belongs in production.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git does the cloning and reading; openssh-client serves ssh:// and git@host:path remotes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid keeps the data volume's ownership valid across image rebuilds.
RUN groupadd --gid 10001 treecast \
    && useradd --uid 10001 --gid treecast --create-home --shell /usr/sbin/nologin treecast

WORKDIR /app

# Dependencies first: this layer is reused until requirements.lock changes.
COPY requirements.lock ./
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.lock
ENV PATH=/opt/venv/bin:$PATH

COPY treecast/ treecast/
COPY models/ models/
COPY activities/ activities/
COPY workflows/ workflows/
COPY examples/ examples/
COPY worker.py starter.py ./
# PYTHONDONTWRITEBYTECODE keeps Python from writing bytecode, not from reading it. The
# workflow sandbox imports the workflow modules afresh for every workflow it runs, which
# compiled their source each time without these (~15 ms a workflow, docs/performance.md).
RUN python3 -m compileall -q treecast models activities workflows examples worker.py starter.py

# The git cache lives on a volume; it must belong to the worker's user before
# the volume is first mounted, because Docker copies this ownership into it.
RUN mkdir /data && chown treecast:treecast /data
ENV TREECAST_DATA_DIR=/data
VOLUME ["/data"]

USER treecast

CMD ["python", "worker.py"]
