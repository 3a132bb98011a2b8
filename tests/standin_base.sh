#!/usr/bin/env bash
# Builds a stand-in for the Dockerfile's base image, python:3.11-slim-bookworm, where
# Docker Hub is out of reach but Debian's mirror is not: Debian bookworm (minbase) with
# its Python 3.11, and a virtual environment at /usr/local so that `python` and `pip`
# are on PATH as in the official image. The host's extra CA certificates (a site's
# TLS-inspecting proxy) go in too, so that pip and apt inside the build trust what the
# host trusts (the image keeps them: it is a base for tests on this host, not to ship).
# Needs root, debootstrap and a Debian mirror (DEBIAN_MIRROR, default deb.debian.org).
#   bash tests/standin_base.sh TAG
set -euo pipefail
tag=${1:?usage: standin_base.sh TAG}
# Not in /tmp, which hardened hosts mount noexec/nodev (debootstrap needs both).
root=$(mktemp -d "${TMPDIR:-/var/tmp}/tfgan-exp-base-XXXXXX")
trap 'rm -rf --one-file-system "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
chroot "$root" /usr/bin/python3 -m venv /usr/local
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' - "$tag" >/dev/null
