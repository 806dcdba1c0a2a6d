#!/usr/bin/env bash
# Builds, once per machine, the Kubernetes 1.20.2 binaries the tests run
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubemark) from
# Debian bookworm's source package, as ../shared/REAL-COMPONENTS.md explains.
#
# The binaries are cached at $QUENCH_K8S_CACHE (default
# /var/cache/quench/k8s-1.20.2/bin). When all four are there this script
# does nothing; delete the directory to force a rebuild.
set -euo pipefail

CACHE=${QUENCH_K8S_CACHE:-/var/cache/quench/k8s-1.20.2}
BIN="$CACHE/bin"
WANT=(kube-apiserver kube-controller-manager kube-scheduler kubemark)

have_all() {
  for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}
if have_all; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

pkgs=(golang-go etcd-server rsync jq make openssl bc dpkg-dev
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
need=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "k8s-build: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${need[@]}" >&2
fi

$SUDO mkdir -p "$CACHE"
$SUDO chown "$(id -u):$(id -g)" "$CACHE"
WORK="$CACHE/build"
rm -rf "$WORK"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/apt/parts" "$WORK/src"

# A private apt state with one deb-src line, so /etc/apt stays untouched.
uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
uri=${uri:-http://deb.debian.org/debian}
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm main" \
  >"$WORK/apt/sources.list"
APT_OPTS=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list"
  -o "Dir::Etc::SourceParts=$WORK/apt/parts"
  -o "Dir::State::Lists=$WORK/apt/lists"
  -o "Dir::Cache=$WORK/apt/cache"
  -o "Debug::NoLocking=1")
echo "k8s-build: fetching the kubernetes source package" >&2
apt-get "${APT_OPTS[@]}" -qq update
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" -qq source --download-only kubernetes)

orig=$(ls "$WORK"/src/kubernetes_*.orig.tar.gz | head -1)
mkdir -p "$WORK/tree"
tar -xzf "$orig" -C "$WORK/tree" --strip-components=1
cd "$WORK/tree"

echo "k8s-build: patching" >&2
# 1. reflect2 1.0.1 breaks on Go >= 1.18: use Debian's copies.
for d in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rm -rf "vendor/$d"
  cp -r "/usr/share/gocode/src/$d" "vendor/$d"
  rm -f "vendor/$d/go.mod" "vendor/$d/go.sum"
done
# 2. The hollow kubelet listens on loopback only.
sed -i 's/"0\.0\.0\.0"/"127.0.0.1"/g' pkg/kubemark/hollow_kubelet.go
grep -q '"127.0.0.1"' pkg/kubemark/hollow_kubelet.go
# 3. No in-tree image credential providers: the AWS one calls the cloud
#    metadata address as soon as an image is "pulled".
for f in cmd/kubelet/app/plugins.go cmd/kubelet/app/options/globalflags.go; do
  sed -i -E '/k8s\.io\/kubernetes\/pkg\/credentialprovider\/(aws|azure|gcp)"/d' "$f"
  if grep -qE 'credentialprovider/(aws|azure|gcp)' "$f"; then
    echo "k8s-build: could not remove the credential providers from $f" >&2
    exit 1
  fi
done

echo "k8s-build: building (about 6 minutes on 2 cores)" >&2
mkdir -p .go/src/k8s.io
ln -sfn "$PWD" .go/src/k8s.io/kubernetes
export GOPATH="$PWD/.go" GOFLAGS=-tags=providerless GOCACHE="$WORK/gocache"
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubemark" >&2

mkdir -p "$BIN"
for b in "${WANT[@]}"; do
  cp "_output/local/go/bin/$b" "$BIN/$b" 2>/dev/null || cp "_output/bin/$b" "$BIN/$b"
done
cd /
rm -rf "$WORK"
have_all
echo "k8s-build: binaries cached in $BIN" >&2
