# readmit service image: SQLite and index snapshots in the /data volume by default, or
# PostgreSQL through READMIT_DATABASE_URL.
FROM python:3.11-slim

# docker build --build-arg EXTRAS=ray . : an image that can run the Ray backend (and join a cluster)
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    READMIT_DATA_DIR=/data PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 readmit && mkdir /data && chown readmit /data
WORKDIR /opt/readmit
COPY pyproject.toml setup.py README.md ./
COPY app ./app
COPY matcher ./matcher
COPY migrations ./migrations
RUN pip install -e ".${EXTRAS:+[$EXTRAS]}" && chown -R readmit /opt/readmit

USER readmit
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["readmit", "serve", "--host", "0.0.0.0", "--port", "8000"]
