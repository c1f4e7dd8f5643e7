# Stand-in for python:3.11-slim where no registry can be reached: Debian bookworm's own
# Python 3.11 in a virtual environment on PATH, so `pip install` and console scripts land
# where the official image puts them on PATH.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /usr/local/python \
 && /usr/local/python/bin/pip install --no-cache-dir --quiet --upgrade pip
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.keygate.stand-in="python:3.11-slim from Debian bookworm's python3"
CMD ["python3"]
