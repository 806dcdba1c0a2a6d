#!/usr/bin/env bash
# Installs, idempotently, every Debian package the tests start for real.
# See ../shared/REAL-COMPONENTS.md for why each is needed.
set -euo pipefail
need=()
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
command -v git >/dev/null || need+=(git)
command -v go >/dev/null || need+=(golang-go)
command -v perf >/dev/null || need+=(linux-perf)
# The Kubernetes control plane (scripts/k8s-up.sh; k8s-build.sh installs
# what building it needs).
command -v etcd >/dev/null || need+=(etcd-server)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
# The console's browser tests drive a real headless Chromium through
# ChromeDriver (WebDriver).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# git2 (https) builds against the system OpenSSL.
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing test dependencies: ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  -o DPkg::Lock::Timeout=300 "${need[@]}" >&2
