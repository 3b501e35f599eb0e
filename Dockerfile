# The hub image: `seclusion-hub serve` on port 8000. Built by docker-compose.yml (service `hub`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Pango and a font for WeasyPrint (the parents' written copy and the governors' report as PDF).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user; its home holds the SQLite database (a volume in docker-compose.yml).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/seclusion --create-home seclusion

WORKDIR /src
# Only what the package needs, so that a change to tests or docs does not rebuild the install layer.
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY edge ./edge
COPY hub ./hub
RUN pip install ".[hub]" && rm -rf /src/build

USER seclusion
WORKDIR /var/lib/seclusion
VOLUME ["/var/lib/seclusion"]

ENV SECLUSION_HTTP_HOST=0.0.0.0 \
    SECLUSION_HTTP_PORT=8000 \
    SECLUSION_DATABASE_URL=sqlite:////var/lib/seclusion/seclusion.db \
    SECLUSION_SITE_FILES=/etc/seclusion/site.yaml
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SECLUSION_HTTP_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["seclusion-hub", "serve"]
