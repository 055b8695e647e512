# The image behind the compose file's Dagster services (code server, webserver, daemon).
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH
RUN pip install uv==0.13.8
WORKDIR /opt/dagster/app
COPY pyproject.toml uv.lock README.md ./
COPY exports_pipeline ./exports_pipeline
COPY docker ./docker
RUN uv sync --frozen --no-dev && mkdir -p /opt/dagster/home && cp docker/dagster.yaml /opt/dagster/home/dagster.yaml
