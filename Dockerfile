# digest in a container: `digest serve` on the configured schedule.
# State and outbox live in the /data volume; the config is read from /config/config.yaml (mount it read-only,
# with state: /data/digest.sqlite3 and output.outbox: /data/outbox in it). Secrets come from the environment.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY digest ./digest
COPY templates ./templates
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
LABEL org.opencontainers.image.title="digest" \
      org.opencontainers.image.description="A self-hosted daily arXiv digest, filtered by an LLM against your research interests" \
      org.opencontainers.image.licenses="MIT"
RUN useradd --create-home --uid 10001 digest && mkdir -p /data /config && chown digest /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV DIGEST_CONFIG=/config/config.yaml \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
WORKDIR /data
USER digest
CMD ["digest", "serve"]
