# One image, two targets: `receiver` and `bridge` (each a separate deployable and venv layer).
# Build: docker compose build   (or: docker build --target receiver -t autoplay-receiver .)
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --system --uid 10001 --home /app app
COPY pyproject.toml README.md ./
COPY receiver ./receiver
COPY bridge ./bridge
COPY migrations ./migrations

FROM base AS receiver
# Editable so that receiver/../migrations resolves inside the image as in a checkout.
RUN pip install -e .
USER app
EXPOSE 8000
ENV RECEIVER_HOST=0.0.0.0 RECEIVER_PORT=8000
HEALTHCHECK --interval=10s --timeout=3s --retries=6 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"
# `serve` applies migrations first, then serves.
CMD ["receiver", "serve"]

FROM base AS bridge
RUN pip install -e '.[bridge]'
USER app
EXPOSE 8090
ENV BRIDGE_HOST=0.0.0.0 BRIDGE_PORT=8090
HEALTHCHECK --interval=10s --timeout=3s --retries=6 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8090/healthz', timeout=2).status != 200)"
CMD ["bridge", "serve"]
