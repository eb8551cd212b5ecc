# SOCS's own image with socs_tcp added and our launcher as its entrypoint:
# what the README ("Run your existing SOCS agents on socs_tcp") tells a SOCS
# site to build. Nothing of SOCS changes: its agents, drivers and packages are
# the image's; `socs-tcp agent` takes what ocs-agent-cli takes, switches
# socs.tcp.TCPInterface to socs_tcp's before the agent is imported, and runs
# the agent as ocs-agent-cli would.
#
# Build from the repository root (docker/docker-compose.socs.yml does this):
#   docker build -f docker/socs-on-socs-tcp.Dockerfile -t socs-on-socs-tcp:v0.6.4 .
#
# Pinned to the socs release socs_tcp.compat was checked against (0.6.x,
# tested with 0.6.4); the image tag says which. Where simonsobs/socs cannot be
# pulled, docker/ci-up.sh builds a stand-in under the same name
# (docker/standins/socs); this file is the same for both.
ARG SOCS_TAG=v0.6.4
FROM simonsobs/socs:${SOCS_TAG}

# The build context is filtered by /.dockerignore to what pip needs. No
# extras: the image already has ocs and socs, which pip leaves as they are.
COPY . /app/socs_tcp/
RUN python -m pip install --no-cache-dir /app/socs_tcp && rm -rf /app/socs_tcp
ENTRYPOINT ["dumb-init", "socs-tcp", "agent"]
