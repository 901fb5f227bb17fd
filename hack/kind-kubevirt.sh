#!/usr/bin/env bash
# A kind cluster with KubeVirt and kvnet (installed beside Multus's place: kvnet is the
# meta-plugin), the kvnet binding registered in the KubeVirt CR, and examples/vm-kvnet.yaml
# started; prints the VM's NICs as KubeVirt reports them.
#
# Needs docker, kind, kubectl and the two kvnet images built locally:
#   docker build -f deploy/Containerfile.node -t "$KVNET_NODE_IMAGE" .
#   docker build -f deploy/Containerfile.sidecar -t "$KVNET_SIDECAR_IMAGE" .
# This script has not been run on the machine kvnet is developed on (no Docker engine
# there); its manifests are applied to a real kube-apiserver by tests/deploy.
set -euo pipefail

cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-kvnet}
KUBEVIRT_VERSION=${KUBEVIRT_VERSION:-v1.8.4}
KVNET_NODE_IMAGE=${KVNET_NODE_IMAGE:-registry.example.org/kvnet/kvnet-node:0.1.0}
KVNET_SIDECAR_IMAGE=${KVNET_SIDECAR_IMAGE:-registry.example.org/kvnet/kvnet-sidecar:0.1.0}
KUBEVIRT_URL=https://github.com/kubevirt/kubevirt/releases/download/${KUBEVIRT_VERSION}

for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || { echo "kind-kubevirt.sh: $tool not found" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER"
fi
kind load docker-image --name "$CLUSTER" "$KVNET_NODE_IMAGE" "$KVNET_SIDECAR_IMAGE"

echo "== kvnet"
kubectl apply -f crds/network-attachment-definition.yaml
kubectl apply -f deploy/rbac.yaml -f deploy/rbac-thick.yaml -f deploy/node-daemonset.yaml
kubectl -n kube-system rollout status daemonset/kvnet-node --timeout=300s
kubectl apply -f deploy/binding-nad.yaml

echo "== KubeVirt $KUBEVIRT_VERSION"
kubectl apply -f "$KUBEVIRT_URL/kubevirt-operator.yaml"
kubectl apply -f "$KUBEVIRT_URL/kubevirt-cr.yaml"
# kind nodes have no /dev/kvm unless the host passes it: emulate then
if ! docker exec "$CLUSTER-control-plane" test -c /dev/kvm; then
    kubectl -n kubevirt patch kubevirt kubevirt --type merge \
        --patch '{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}'
fi
kubectl -n kubevirt patch kubevirt kubevirt --type merge --patch-file deploy/kubevirt-cr-patch.yaml
kubectl -n kubevirt wait kubevirt/kubevirt --for=condition=Available --timeout=600s

echo "== examples/vm-kvnet.yaml"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f examples/vm-kvnet.yaml
kubectl -n demo wait vmi/vm-kvnet --for=condition=Ready --timeout=600s

echo "== the VM's NICs"
kubectl -n demo get vmi vm-kvnet \
    -o jsonpath='{range .status.interfaces[*]}{.name}{"\t"}{.mac}{"\t"}{.ipAddresses}{"\n"}{end}'
