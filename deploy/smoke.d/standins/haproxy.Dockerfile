# Stand-in for haproxy:2.8 where no registry can be reached: Debian bookworm's haproxy, run
# as the official image runs it (config at /usr/local/etc/haproxy/haproxy.cfg, non-root).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy
LABEL org.keygate.stand-in="haproxy:2.8 from Debian bookworm's haproxy"
USER haproxy
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
