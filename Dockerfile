# Strait in a container: a static binary on an empty base, run as a
# non-root user. Build with
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t strait .
# and run with a config mounted over the quickstart one:
#   docker run --rm -p 10000:10000 -v $PWD/my.yaml:/etc/strait/strait.yaml:ro strait
# (The quickstart's admin port listens on 127.0.0.1 inside the container;
# give admin.address 0.0.0.0 and --admin-allow-remote to reach it.)

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same flags as make release: static, trimmed paths, no build id, so
# the same source and Go version give the same bytes.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -buildid= -X main.version=${VERSION}" -o /out/strait ./cmd/strait \
 && echo 'strait:x:65532:65532:strait:/nonexistent:/sbin/nologin' > /out/passwd \
 && echo 'strait:x:65532:' > /out/group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/group /etc/group
COPY --from=build /out/strait /usr/local/bin/strait
COPY examples/quickstart.yaml /etc/strait/strait.yaml
USER 65532:65532
EXPOSE 10000
ENTRYPOINT ["/usr/local/bin/strait"]
CMD ["-c", "/etc/strait/strait.yaml"]
