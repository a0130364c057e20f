# Pulse: one image for the dataflow, the API, the dispatcher and topic setup.
# docker-compose.yml picks the process with its `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app

# Pinned installs when constraints.txt is in the build context, plain otherwise.
RUN if [ -f constraints.txt ]; then \
        pip install --no-cache-dir -c constraints.txt . ; \
    else \
        pip install --no-cache-dir . ; \
    fi

# Run as an unprivileged user; /data/recovery is owned by it so a named volume
# mounted there starts out writable.
RUN useradd --create-home --uid 10001 pulse \
    && mkdir -p /data/recovery \
    && chown -R pulse:pulse /data
USER pulse

EXPOSE 8000
CMD ["pulse", "--help"]
