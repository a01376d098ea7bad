# readmit service image: SQLite and index snapshots in the /data volume by default, or
# PostgreSQL through READMIT_DATABASE_URL; the master key of encryption at rest in the /keys
# volume (made at the first start), apart from the data it protects.
FROM python:3.11-slim

# docker build --build-arg EXTRAS=ray . : an image that can run the Ray backend (and join a cluster)
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    READMIT_DATA_DIR=/data READMIT_MASTER_KEY_FILE=/keys/master.key PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 readmit && mkdir /data /keys && chown readmit /data /keys && chmod 700 /keys
WORKDIR /opt/readmit
COPY pyproject.toml setup.py README.md ./
COPY app ./app
COPY matcher ./matcher
COPY migrations ./migrations
RUN pip install -e ".${EXTRAS:+[$EXTRAS]}" && chown -R readmit /opt/readmit

USER readmit
VOLUME ["/data", "/keys"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["readmit", "serve", "--host", "0.0.0.0", "--port", "8000"]
