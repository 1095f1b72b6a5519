# The image every Kubeflow component runs in (tfx-image-transfer-kubeflow --image). It installs
# the environment the way scripts/in-env builds its Debian 13 root filesystem: the same system
# package list, the same lock file, the same pip command.
#
#   docker build -t REGISTRY/tfx-image-transfer:TAG . && docker push REGISTRY/tfx-image-transfer:TAG
FROM debian:trixie-slim

# System packages: one list, env/system-packages.txt, read the way scripts/in-env reads it.
COPY env/system-packages.txt /tmp/system-packages.txt
RUN apt-get update \
    && grep -v -e '^#' -e '^[[:space:]]*$' /tmp/system-packages.txt \
       | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/system-packages.txt

# The locked Python environment, as scripts/in-env creates it (--no-cache-dir keeps pip's
# download cache out of the layer).
COPY requirements.lock /opt/project/requirements.lock
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps \
       -r /opt/project/requirements.lock

# The compiled pipeline starts every component as `python -m ...`: the venv's python first.
# TF_USE_LEGACY_KERAS is explicit for the reason scripts/in-env and the entry points set it:
# importing tfx would otherwise set it only when unset.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONPATH=/opt/project \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    PYTHONUNBUFFERED=1

RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash tfx

# The project's packages (.dockerignore lets only them and the environment files through).
COPY . /opt/project/
RUN python -c "import pipeline.pipeline, pipeline.run_kubeflow, components.pusher, trainer.task"

# Numeric, so that Kubernetes' runAsNonRoot (Kubeflow Pipelines sets it) can verify it.
USER 1000:1000
WORKDIR /home/tfx
