# digest in a container: `digest serve` on the schedule in config.yaml.
#   state and outbox: the /data volume (relative paths in config.yaml resolve there: DIGEST_DATA)
#   config: /config/config.yaml, mounted read-only (compose.yaml mounts ./my-config.yaml there)
#   secrets: environment variables (OPENAI_API_KEY, SMTP_PASSWORD, ...), from an env file
# Dependencies come from requirements.lock, exact versions checked against their hashes, so two builds of the
# same commit install the same code. See compose.yaml, and the README's "Container" section.

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /venv
COPY requirements.lock ./
RUN /venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY digest ./digest
COPY templates ./templates
RUN /venv/bin/pip install --no-cache-dir --no-deps . && /venv/bin/pip check

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="digest" \
      org.opencontainers.image.description="A self-hosted daily arXiv digest, filtered by an LLM against your research interests" \
      org.opencontainers.image.source="https://github.com/digest-dev/digest" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /venv /venv
RUN useradd --create-home --uid 10001 digest \
    && mkdir -p /data /config && chown digest /data
ENV PATH=/venv/bin:$PATH \
    DIGEST_CONFIG=/config/config.yaml \
    DIGEST_DATA=/data \
    DIGEST_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
WORKDIR /data
USER digest
# The scheduler touches a heartbeat file every 15 s; `digest health` fails when it is a minute old.
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s --retries=3 CMD ["digest", "health"]
STOPSIGNAL SIGTERM
# Logs are JSON lines (DIGEST_LOG_FORMAT), for `serve` and for a one-off `digest run` alike.
CMD ["digest", "serve"]
