# The image every Kubeflow component runs in (tfx-image-transfer-kubeflow --image).
#
#   make image IMAGE=REGISTRY/tfx-image-transfer:TAG && docker push REGISTRY/tfx-image-transfer:TAG
#
# `make image` (scripts/image) picks docker or podman and imports the base when no registry has
# it. With a plain `docker build`, pip inside the build uses PyPI with the system CA bundle;
# behind a TLS-intercepting proxy or a private index, hand pip your config and CA bundle as
# build secrets (never stored in a layer; without them the build is unchanged):
#
#   docker build --secret id=pip-conf,src=pip.conf --secret id=pip-ca,src=ca.crt -t IMG .
#
# Two stages: the builder installs the locked runtime venv (compilers and headers for the few
# source distributions stay here); the final stage has Python, the venv and the project only.

FROM debian:trixie-slim AS builder

# The system packages scripts/in-env installs (one list, read the way it reads it).
COPY env/system-packages.txt /tmp/system-packages.txt
RUN apt-get update \
    && grep -v -e '^#' -e '^[[:space:]]*$' /tmp/system-packages.txt \
       | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y --no-install-recommends

# requirements-runtime.lock: requirements.lock's pins without the test and lint tools (and two
# packages nothing here imports; see scripts/lock).
COPY requirements-runtime.lock /opt/project/requirements-runtime.lock
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip-conf --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi; \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    python3 -m venv /opt/venv && /opt/venv/bin/pip install --require-hashes --no-deps \
       -r /opt/project/requirements-runtime.lock

# What nothing in the image runs (each RUN's deletions only count in the layer that made the
# files, so here in the builder): TensorFlow's C++ headers (for compiling custom ops), the
# symbol tables of the wheels' shared libraries (for debuggers and linkers), the test suites
# the scientific stack ships in tests/ folders, and C/C++/Cython sources, headers and type stubs.
RUN site=$(echo /opt/venv/lib/python3*/site-packages) \
    && rm -rf "$site/tensorflow/include" \
    && find /opt/venv -type f -name '*.so*' -exec sh -c \
       'for f; do case "$(head -c4 "$f" | od -An -c | tr -d " ")" in 177ELF) \
          strip --strip-unneeded "$f";; esac; done' sh {} + \
    && for p in scipy sklearn numpy pandas pyarrow matplotlib IPython; do \
         find "$site/$p" -type d -name tests -prune -exec rm -rf {} +; done \
    && find "$site" -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' \
         -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \) -delete

FROM debian:trixie-slim

COPY env/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
    && grep -v -e '^#' -e '^[[:space:]]*$' /tmp/runtime-packages.txt \
       | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /tmp/runtime-packages.txt

COPY --from=builder /opt/venv /opt/venv

# The compiled pipeline starts every component as `python -m ...`: the venv's python first.
# TF_USE_LEGACY_KERAS is explicit for the reason scripts/in-env and the entry points set it:
# importing tfx would otherwise set it only when unset. HOME is fixed, not taken from
# /etc/passwd, and writable for any uid (OpenShift, KFP's runAsUser): Keras downloads the
# imagenet weights into KERAS_HOME.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONPATH=/opt/project \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/tfx \
    KERAS_HOME=/home/tfx/.keras

# uid 1000 owns HOME; the sticky, world-writable mode (as /tmp) lets any other uid use it too.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash tfx \
    && chmod 1777 /home/tfx

# The project, installed editable as scripts/in-env installs it (its commands on PATH);
# .dockerignore lets only the packages and the files the install reads through. outputs/ is
# the runners' default --output-dir, writable for any uid (mount a volume to keep it).
COPY . /opt/project/
RUN pip install --quiet --no-cache-dir --no-deps --no-build-isolation --no-index -e /opt/project \
    && install -d -m 1777 /opt/project/outputs \
    && python -c "import pipeline.definition, pipeline.run_kubeflow, components.pusher, trainer.task"

# Numeric, so that Kubernetes' runAsNonRoot (Kubeflow Pipelines sets it) can verify it.
USER 1000:1000
WORKDIR /opt/project
