# The modoru worker and CLI for production: the runtime dependencies from
# requirements.lock (exact versions, every file checked against its SHA-256), the
# modoru wheel (which never carries the practice world), no development tools.
#   docker build -t modoru .                              the production image (the last stage)
#   docker build --target local -t modoru:sandbox .       plus the sandbox, for docker-compose's sandbox profile
#
# The base image is pinned by digest: python:3.12.7-slim-bookworm, the multi-platform
# index digest Docker Hub published for that tag (the same digest is pinned, next to
# that tag, in many public Dockerfiles and shows in their `docker build` logs). To move
# to a newer Python, take the digest from `docker buildx imagetools inspect python:TAG`.
FROM python:3.12.7-slim-bookworm@sha256:032c52613401895aa3d418a4c563d2d05f993bc3ecc065c8f4e2280978acd249 AS python
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

FROM python AS build
WORKDIR /src
COPY requirements-build.lock ./
RUN pip install --require-hashes -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY runbook runbook
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY starter starter
RUN pip wheel --no-build-isolation --no-deps --wheel-dir /wheels .

FROM python AS runtime
RUN useradd --create-home --uid 10001 modoru
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
USER modoru
WORKDIR /home/modoru
ENTRYPOINT ["modoru"]
CMD ["worker"]

# The practice world, for `docker compose --profile sandbox`: the `local` extra's
# dependencies from requirements-local.lock, and the sandbox from the source tree
# (it is not part of the modoru package).
FROM runtime AS local
USER root
COPY requirements-local.lock /tmp/requirements-local.lock
RUN pip install --require-hashes -r /tmp/requirements-local.lock && rm /tmp/requirements-local.lock
COPY sandbox /opt/modoru-local/sandbox
ENV PYTHONPATH=/opt/modoru-local
USER modoru

# The default target: production, without the practice world.
FROM runtime AS production
