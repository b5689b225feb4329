# mgsip container image: a static binary on an empty base, run as a
# non-root user.
#
#   docker build -t mgsip .
#   docker run --rm --network host \
#       -v /etc/mgsip:/etc/mgsip:ro --env-file /etc/default/mgsip mgsip
#
# --network host: MGCP gateways address the call agent by its IP and port,
# SIP peers are checked by source address, and RTP never passes through
# mgsip but the SDP it writes names the gateway's and the PBX's addresses,
# so NAT between mgsip and its peers breaks calls (docs/operations.md,
# "Container"). The image's default configuration listens on loopback
# only, like the Debian package's, until you mount your own.

# ---- build ----
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION, REVISION and BUILD_DATE may be given with --build-arg; without
# them the Makefile reads git (when .git is in the context).
ARG VERSION
ARG REVISION
ARG BUILD_DATE
RUN make build BIN=/out/mgsip ${VERSION:+VERSION=$VERSION} ${REVISION:+REVISION=$REVISION} ${BUILD_DATE:+BUILD_DATE=$BUILD_DATE} \
 && /out/mgsip version
# The user the image runs as: no shell, no home, uid/gid 65532.
RUN mkdir -p /out/etc/mgsip \
 && echo 'mgsip:x:65532:65532:mgsip call agent:/nonexistent:/sbin/nologin' >/out/etc/passwd \
 && echo 'mgsip:x:65532:' >/out/etc/group \
 && cp configs/mgsip.yaml /out/etc/mgsip/mgsip.yaml

# ---- run ----
FROM scratch
COPY --from=build /out/etc/passwd /out/etc/group /etc/
# CA roots for SIP over TLS to providers.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build --chown=0:65532 --chmod=0750 /out/etc/mgsip /etc/mgsip
COPY --from=build /out/mgsip /usr/bin/mgsip
COPY --from=build /src/LICENSE /src/NOTICE /usr/share/doc/mgsip/
USER 65532:65532
# MGCP (udp), SIP (udp, tcp), admin API and /metrics (tcp): documentation
# only under --network host.
EXPOSE 2727/udp 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT ["/usr/bin/mgsip"]
CMD ["run", "--config", "/etc/mgsip/mgsip.yaml"]
