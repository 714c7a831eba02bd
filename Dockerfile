# api-proxy and api-poller: one image, two entry points.
# Build stage: Debian's -dev packages; final stage: only their runtime libraries.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make pkg-config libc6-dev \
      libevent-dev libhiredis-dev libcurl4-openssl-dev libcjson-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY include include
COPY common common
COPY proxy proxy
COPY poller poller
# The admin console's static files, built into bin/api-proxy by tools/embed.c.
COPY tools tools
COPY ui ui
# There is no .git in the build context: the version replicas report comes from here.
ARG AP_VERSION=unknown
RUN make -j"$(nproc)" AP_VERSION="$AP_VERSION" bin/api-proxy bin/api-poller bin/api-proxy-admin

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libevent-2.1-7 libhiredis0.14 libcurl4 libcjson1 libssl3 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin apiproxy
COPY --from=build /src/bin/ /usr/local/bin/
COPY fallback.json.example /etc/api-proxy/fallback.json
COPY prices.json.example /etc/api-proxy/prices.json.example
ENV FALLBACK_CONFIG=/etc/api-proxy/fallback.json
USER apiproxy
EXPOSE 8180 8190
ENTRYPOINT ["api-proxy"]
