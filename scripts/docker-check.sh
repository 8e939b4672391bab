#!/usr/bin/env bash
# Builds the Docker image and checks it: `strait --version` prints the
# stamped version, the image runs as a non-root user, and the quickstart
# config serves a request through a published loopback port. Outside
# `make test` (CI machines have no Docker daemon): without one it says
# so and exits 0. Usage: scripts/docker-check.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1 || ! timeout 20 docker info >/dev/null 2>&1; then
	echo "docker-check: skipped: no Docker daemon reachable here"
	exit 0
fi

version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
tag=strait-check:$$
name=strait-check-$$
cleanup() {
	docker rm -f "$name" >/dev/null 2>&1 || true
	docker rmi -f "$tag" >/dev/null 2>&1 || true
}
trap cleanup EXIT

docker build -q --build-arg VERSION="$version" -t "$tag" . >/dev/null

got=$(docker run --rm "$tag" --version)
case "$got" in
*"$version"*) ;;
*) echo "docker-check: --version printed '$got', want $version" >&2; exit 1 ;;
esac

user=$(docker image inspect -f '{{.Config.User}}' "$tag")
if [ -z "$user" ] || [ "${user%%:*}" = 0 ] || [ "${user%%:*}" = root ]; then
	echo "docker-check: the image runs as '$user', want a non-root user" >&2
	exit 1
fi

command -v curl >/dev/null || { echo "docker-check: curl is needed" >&2; exit 1; }
docker run -d --name "$name" -p 127.0.0.1::10000 "$tag" >/dev/null
if ! port=$(docker port "$name" 10000/tcp | head -1 | sed 's/.*://') || [ -z "$port" ]; then
	echo "docker-check: the container did not publish port 10000" >&2
	docker logs "$name" >&2 || true
	exit 1
fi
body=
for _ in $(seq 1 50); do
	if body=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/direct" 2>/dev/null); then
		break
	fi
	body=
	sleep 0.2
done
if [ "$body" != "hello from strait itself" ]; then
	echo "docker-check: GET /direct through the published port: '$body'" >&2
	docker logs "$name" >&2 || true
	exit 1
fi
echo "docker-check: ok: $got, user $user, quickstart serving on 127.0.0.1:$port"
