#!/usr/bin/env bash
# Starts a real Kubernetes 1.20 control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) and one simulated node (kubemark)
# inside a private network namespace that has only loopback, as
# ../shared/REAL-COMPONENTS.md prescribes. Builds the binaries first if they
# are not cached (scripts/k8s-build.sh).
#
# Writes $STATE/env with what the tests read:
#   QUENCH_TEST_KUBECONFIG  admin kubeconfig (client certificate, system:masters)
#   QUENCH_TEST_NETNS       the namespace every test process must run in
#   QUENCH_TEST_DRAIN_NODE  a second simulated node, tainted, for drain tests
#   QUENCH_TEST_POD_IP      the address the simulated nodes give every pod;
#                           it is on the namespace's loopback, so a server
#                           listening there is what the API server's pod
#                           proxy reaches
# Stop everything with scripts/k8s-down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

NS=${QUENCH_NETNS:-quench-test}
STATE=${QUENCH_K8S_STATE:-/tmp/quench-k8s}
CACHE=${QUENCH_K8S_CACHE:-/var/cache/quench/k8s-1.20.2}
BIN="$CACHE/bin"
# The fake container runtime of kubemark gives every pod this address.
POD_IP=192.168.192.168
APISERVER_PORT=6443

scripts/k8s-build.sh
command -v etcd >/dev/null || {
  echo "k8s-up: etcd is missing: apt-get install etcd-server" >&2
  exit 1
}

if [ -f "$STATE/pids" ]; then
  scripts/k8s-down.sh
fi
rm -rf "$STATE"
mkdir -p "$STATE/pki" "$STATE/logs"

in_ns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS"
in_ns ip link set lo up
in_ns ip addr add "$POD_IP/32" dev lo

# --- certificates -----------------------------------------------------------
P="$STATE/pki"
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=quench-test-ca" \
  -keyout "$P/ca.key" -out "$P/ca.crt"
sign() { # name subject [extfile]
  openssl_quiet req -newkey rsa:2048 -nodes -subj "$2" -keyout "$P/$1.key" -out "$P/$1.csr"
  if [ -n "${3:-}" ]; then
    openssl_quiet x509 -req -in "$P/$1.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" \
      -CAcreateserial -days 30 -extfile "$3" -out "$P/$1.crt"
  else
    openssl_quiet x509 -req -in "$P/$1.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" \
      -CAcreateserial -days 30 -out "$P/$1.crt"
  fi
}
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' \
  >"$P/server.ext"
sign apiserver "/CN=kube-apiserver" "$P/server.ext"
printf 'extendedKeyUsage=clientAuth\n' >"$P/client.ext"
sign admin "/O=system:masters/CN=quench-test-admin" "$P/client.ext"
openssl_quiet genrsa -out "$P/sa.key" 2048
openssl_quiet rsa -in "$P/sa.key" -pubout -out "$P/sa.pub"

cat >"$STATE/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: quench-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $P/ca.crt
users:
- name: admin
  user:
    client-certificate: $P/admin.crt
    client-key: $P/admin.key
contexts:
- name: quench-test
  context: {cluster: quench-test, user: admin}
current-context: quench-test
EOF

# --- processes --------------------------------------------------------------
start() { # name command...
  local name=$1
  shift
  in_ns "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$STATE/pids"
}

start etcd etcd --name quench-test --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster quench-test=http://127.0.0.1:2380 --unsafe-no-fsync

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers http://127.0.0.1:2379 \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --authorization-mode RBAC --allow-privileged=true \
  --enable-admission-plugins NamespaceLifecycle,ServiceAccount \
  --endpoint-reconciler-type none --service-cluster-ip-range 10.0.0.0/24 \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --client-ca-file "$P/ca.crt" --tls-cert-file "$P/apiserver.crt" \
  --tls-private-key-file "$P/apiserver.key" \
  --kubelet-client-certificate "$P/admin.crt" --kubelet-client-key "$P/admin.key"

curl_api() {
  in_ns curl -sf --max-time 5 --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT$1"
}
wait_for() { # what seconds command...
  local what=$1 secs=$2
  shift 2
  for _ in $(seq 1 "$((secs * 2))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "k8s-up: $what not ready after ${secs}s; logs in $STATE/logs" >&2
  tail -20 "$STATE"/logs/*.log >&2
  exit 1
}
wait_for kube-apiserver 60 curl_api /readyz

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$STATE/admin.kubeconfig" --secure-port 0 --port 0 --leader-elect=false \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --use-service-account-credentials=true
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$STATE/admin.kubeconfig" --secure-port 0 --port 0 --leader-elect=false
# Each simulated node gets a /tmp of its own: kubemark's fake container
# runtime listens on /tmp/kubelet_remote.sock, and two nodes sharing that
# path race (one removes the other's socket as it starts: "dial unix
# /tmp/kubelet_remote.sock: no such file", and the node never registers).
# $STATE stays visible at its path inside it.
# kubemark 1.20's fake container runtime sometimes dies of a race of its
# own ("fatal error: concurrent map writes" in kubelet/container/testing/
# os.go, seen once in many runs here) while pods start; the node is then
# started again at once: it registers anew and the API server's pods are
# started again, within the tests' 60 s wait for them.
start_node() { # name kubemark-arguments...
  local name=$1
  shift
  local own="$STATE/tmp-$name"
  mkdir -p "$own"
  start "$name" unshare --mount --propagation private sh -c '
    own=$1 state=$2
    shift 2
    case "$state" in
      /tmp/*)
        mkdir -p "$own/${state#/tmp/}"
        mount --bind "$state" "$own/${state#/tmp/}"
        ;;
    esac
    mount --rbind "$own" /tmp
    while :; do
      "$@"
      echo "k8s-up: kubemark exited ($?); starting it again" >&2
      sleep 1
    done' sh "$own" "$STATE" "$BIN/kubemark" "$@"
}
start_node kubemark --morph kubelet --name localhost \
  --kubeconfig "$STATE/admin.kubeconfig" --kubelet-port 10250 --kubelet-read-only-port 0
# A second node for the tests that cordon and drain: tainted, so only pods
# that tolerate the taint land there, and draining it disturbs no one else.
start_node kubemark-drain --morph kubelet --name drain-node \
  --node-labels quench.dev/pool=drain \
  --kubeconfig "$STATE/admin.kubeconfig" --kubelet-port 10251 --kubelet-read-only-port 0

node_ready() {
  curl_api "/api/v1/nodes/$1" |
    jq -e '.status.conditions[] | select(.type == "Ready") | .status == "True"' | grep -q true
}
wait_for "the simulated node" 90 node_ready localhost
wait_for "the drain node" 90 node_ready drain-node
in_ns curl -sf --max-time 5 --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" \
  -X PATCH -H 'Content-Type: application/merge-patch+json' \
  -d '{"spec":{"taints":[{"key":"quench.dev/drain-test","value":"true","effect":"NoSchedule"}]}}' \
  "https://127.0.0.1:$APISERVER_PORT/api/v1/nodes/drain-node" >/dev/null
# The default service account appears when the controller manager's token
# controller has run; pods cannot be created before that.
wait_for "the default service account" 60 curl_api /api/v1/namespaces/default/serviceaccounts/default

cat >"$STATE/env" <<EOF
QUENCH_TEST_KUBECONFIG=$STATE/admin.kubeconfig
QUENCH_TEST_NETNS=$NS
QUENCH_TEST_POD_IP=$POD_IP
QUENCH_TEST_DRAIN_NODE=drain-node
EOF
echo "k8s-up: control plane ready in network namespace $NS ($STATE/env)" >&2
