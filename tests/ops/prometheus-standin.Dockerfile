# A stand-in for the official Prometheus image, for daemons that reach no registry
# (tests/ops/test_stack.py builds it when STANDIN_PROMETHEUS=1): Debian's Prometheus on the
# tests' base image, with wget for the Compose file's healthcheck. Like the official image, its
# entrypoint is the server, so the Compose file's `command:` arguments and mounts apply.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /etc/prometheus /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
