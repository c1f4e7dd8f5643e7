# Stand-in for redis:6.2 where no registry can be reached: Debian bookworm's redis-server
# (a 7.0, which serves every command of 6.2), with protected mode off as in the official
# image, whose container network is the protection.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && printf '#!/bin/sh\nexec /usr/bin/redis-server "$@" --protected-mode no\n' > /usr/local/bin/redis-server \
 && chmod +x /usr/local/bin/redis-server
LABEL org.keygate.stand-in="redis:6.2 from Debian bookworm's redis-server"
USER redis
WORKDIR /var/lib/redis
EXPOSE 6379
CMD ["redis-server"]
