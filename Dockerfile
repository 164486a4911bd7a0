# The modoru worker and CLI. Build: docker build -t modoru .
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runbook runbook
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY starter starter
COPY sandbox sandbox
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --create-home --uid 10001 modoru
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER modoru
WORKDIR /home/modoru
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["modoru"]
CMD ["worker"]
