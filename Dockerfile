# Strait in a container: a static binary on an empty base, run as a
# non-root user. Build with
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t strait .
# and run with a config mounted over the quickstart one:
#   docker run --rm -p 10000:10000 -v $PWD/my.yaml:/etc/strait/strait.yaml:ro strait
# The image's quickstart config listens on 0.0.0.0:10000 (a published
# port reaches the container's own address, not its loopback); its admin
# port stays on 127.0.0.1 inside the container: give admin.address
# 0.0.0.0 and --admin-allow-remote to reach it from outside.
# scripts/docker-check.sh builds the image and checks it serves.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same flags as make release: static, trimmed paths, no build id, so
# the same source and Go version give the same bytes.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -buildid= -X main.version=${VERSION}" -o /out/strait ./cmd/strait \
 && sed 's/address: 127.0.0.1, port_value: 10000/address: 0.0.0.0, port_value: 10000/' examples/quickstart.yaml > /out/strait.yaml \
 && grep -q 'address: 0.0.0.0, port_value: 10000' /out/strait.yaml \
 && echo 'strait:x:65532:65532:strait:/nonexistent:/sbin/nologin' > /out/passwd \
 && echo 'strait:x:65532:' > /out/group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/group /etc/group
COPY --from=build /out/strait /usr/local/bin/strait
COPY --from=build /out/strait.yaml /etc/strait/strait.yaml
USER 65532:65532
EXPOSE 10000
ENTRYPOINT ["/usr/local/bin/strait"]
CMD ["-c", "/etc/strait/strait.yaml"]
