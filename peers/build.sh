#!/usr/bin/env bash
# Build the real peers that kvnet's tests run against, from Go modules only.
#
#   peers/build.sh            # -> build/peers/{bin,cni,crds} under the repo root
#   OUT=/some/dir peers/build.sh
#   FORCE=1 peers/build.sh    # ignore the stamp and rebuild
#
# Every peer is pinned by its own module in peers/<peer>/go.mod + go.sum (see
# peers/README.md). The script is cached: $OUT/.stamp holds a hash of every
# peers/**/go.mod, go.sum, *.go, this script and the Go version; when it
# matches and every output exists, the script exits 0 at once.
set -euo pipefail

PEERS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$PEERS")
OUT=${OUT:-$ROOT/build/peers}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { printf 'peers: %s\n' "$*" >&2; }

if ! command -v go >/dev/null 2>&1; then
	PATH=/usr/local/go/bin:$PATH
	command -v go >/dev/null 2>&1 || { log "go not found (looked on PATH and in /usr/local/go/bin)"; exit 1; }
fi

# Never download a toolchain, never use a workspace from a parent directory,
# and build exactly what go.mod/go.sum pin (a missing go.sum line is an error,
# not a silent upgrade). PEERS_GOFLAGS=-mod=mod relaxes that if ever needed.
export GOTOOLCHAIN=local GOWORK=off
export GOFLAGS="${PEERS_GOFLAGS:--mod=readonly} -buildvcs=false"
export CGO_ENABLED=0

BIN_OUT=(kube-apiserver kubectl etcd multus multus-shim multus-daemon kubevirt-peer)
CNI_PLUGINS=(
	main/bridge main/dummy main/host-device main/ipvlan main/loopback
	main/macvlan main/ptp main/tap main/vlan
	ipam/dhcp ipam/host-local ipam/static
	meta/bandwidth meta/firewall meta/portmap meta/sbr meta/tuning meta/vrf
)
CRDS=(
	whereabouts.cni.cncf.io_ippools.yaml
	whereabouts.cni.cncf.io_nodeslicepools.yaml
	whereabouts.cni.cncf.io_overlappingrangeipreservations.yaml
)

expected_outputs() {
	local f
	for f in "${BIN_OUT[@]}"; do echo "$OUT/bin/$f"; done
	for f in "${CNI_PLUGINS[@]}"; do echo "$OUT/cni/${f##*/}"; done
	echo "$OUT/cni/whereabouts"
	for f in "${CRDS[@]}"; do echo "$OUT/crds/$f"; done
}

stamp() {
	{
		go version
		go env GOOS GOARCH
		cd "$PEERS"
		find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) \
			-not -path './*/vendor/*' | LC_ALL=C sort | xargs sha256sum
	} | sha256sum | cut -d' ' -f1
}

want=$(stamp)
if [[ -z ${FORCE:-} && -f $OUT/.stamp && $(cat "$OUT/.stamp") == "$want" ]]; then
	missing=0
	while read -r f; do [[ -e $f ]] || { missing=1; break; }; done < <(expected_outputs)
	if ((missing == 0)); then
		log "up to date ($OUT)"
		exit 0
	fi
fi
rm -f "$OUT/.stamp"
mkdir -p "$OUT/bin" "$OUT/cni" "$OUT/crds"

START=$SECONDS
LDS='-s -w'
# modver DIR MODULE: the version pinned by DIR/go.mod (after replace).
modver() { (cd "$PEERS/$1" && go list -m -f '{{with .Replace}}{{.Version}}{{else}}{{.Version}}{{end}}' "$2"); }
gobuild() { # gobuild DIR LDFLAGS -o OUTPUT PKG...
	local dir=$1 ldflags=$2
	shift 2
	(cd "$PEERS/$dir" && go build -trimpath -ldflags="$LDS $ldflags" "$@")
}

log "go: $(go version) (GOMODCACHE=$(go env GOMODCACHE))"

# 1. kube-apiserver -----------------------------------------------------------
v=$(modver apiserver k8s.io/kubernetes)
log "kube-apiserver $v (k8s.io/kubernetes; slowest, several minutes cold)"
minor=${v#v1.}; minor=${minor%%.*}
vx=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	vx+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
gobuild apiserver "$vx" -o "$OUT/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
# kubectl from the same module and pins: tests read `kubectl describe` as an operator would
gobuild apiserver "$vx" -o "$OUT/bin/kubectl" k8s.io/kubernetes/cmd/kubectl

# 2. etcd ---------------------------------------------------------------------
v=$(modver etcd go.etcd.io/etcd/server/v3)
log "etcd $v (go.etcd.io/etcd/server/v3)"
gobuild etcd "" -o "$OUT/bin/etcd" go.etcd.io/etcd/server/v3

# 3. multus -------------------------------------------------------------------
v=$(modver multus gopkg.in/k8snetworkplumbingwg/multus-cni.v4)
log "multus, multus-shim, multus-daemon $v"
mp=gopkg.in/k8snetworkplumbingwg/multus-cni.v4
gobuild multus "-X $mp/pkg/multus.version=$v -X $mp/pkg/multus.releaseStatus=,released -X $mp/pkg/multus.gitTreeState=clean" \
	-o "$OUT/bin/" "$mp/cmd/multus" "$mp/cmd/multus-shim" "$mp/cmd/multus-daemon"

# 4. CNI reference plugins ----------------------------------------------------
v=$(modver cni-plugins github.com/containernetworking/plugins)
log "CNI plugins $v: ${CNI_PLUGINS[*]##*/}"
pkgs=()
for p in "${CNI_PLUGINS[@]}"; do pkgs+=("github.com/containernetworking/plugins/plugins/$p"); done
gobuild cni-plugins "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$v" \
	-o "$OUT/cni/" "${pkgs[@]}"

# 5. whereabouts + CRDs -------------------------------------------------------
v=$(modver whereabouts github.com/k8snetworkplumbingwg/whereabouts)
log "whereabouts $v (+ CRDs)"
wp=github.com/k8snetworkplumbingwg/whereabouts
gobuild whereabouts "-X $wp/pkg/version.Version=$v -X $wp/pkg/version.ReleaseStatus=released -X $wp/pkg/version.GitTreeState=clean" \
	-o "$OUT/cni/whereabouts" "$wp/cmd"
wdir=$(cd "$PEERS/whereabouts" && go list -m -f '{{.Dir}}' "$wp")
for f in "${CRDS[@]}"; do install -m 0644 "$wdir/doc/crds/$f" "$OUT/crds/$f"; done

# 6. kubevirt-peer -----------------------------------------------------------
# Our own small program over KubeVirt's packages (peers/kubevirt/*.go). KubeVirt's
# virt-launcher packages import libvirt's Go binding, which needs cgo; its libvirt_dlopen
# tag builds it without libvirt's headers or library (nothing here calls libvirt).
v=$(modver kubevirt kubevirt.io/kubevirt)
log "kubevirt-peer over kubevirt.io/kubevirt $v (cgo, -tags libvirt_dlopen)"
(cd "$PEERS/kubevirt" && CGO_ENABLED=1 go build -tags libvirt_dlopen -trimpath -ldflags="$LDS" \
	-o "$OUT/bin/kubevirt-peer" .)

while read -r f; do [[ -e $f ]] || { log "missing after build: $f"; exit 1; }; done < <(expected_outputs)
echo "$want" > "$OUT/.stamp"
log "done in $((SECONDS - START))s -> $OUT"
