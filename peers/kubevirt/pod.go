package main

// The virt-launcher pod's network annotations, as virt-controller writes them.

import (
	"encoding/json"
	"fmt"

	networkv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	k8sv1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kubevirt.io/kubevirt/pkg/hooks"
	"kubevirt.io/kubevirt/pkg/network/downwardapi"
	"kubevirt.io/kubevirt/pkg/network/netbinding"
	netannotations "kubevirt.io/kubevirt/pkg/network/pod/annotations"
)

// sidecarOut is one hook sidecar of the pod: hooks.HookSidecar as JSON (the format of the
// hooks.kubevirt.io/hookSidecars annotation) plus its field that carries `json:"-"`.
type sidecarOut struct {
	hooks.HookSidecar
	DownwardAPI string `json:"downwardAPI,omitempty"`
	// Container is virt-controller's name for the i-th sidecar container
	// (services.sidecarContainerName: "hook-sidecar-%d"), its socket sub-folder too.
	Container string `json:"container"`
}

// annotation: the pod annotations of pkg/network/pod/annotations.Generator.Generate (which
// calls multus.GenerateCNIAnnotation for k8s.v1.cni.cncf.io/networks) and the hook sidecar
// list virt-controller's TemplateService builds: the VMI's own hooks.kubevirt.io/hookSidecars
// (hooks.UnmarshalHookSidecarList) followed by netbinding.NetBindingPluginSidecarList, the
// two sidecar creators of pkg/virt-controller/watch/application.go, in that order.
func annotation(in *input) (any, error) {
	vmi, err := in.vmi()
	if err != nil {
		return nil, err
	}
	cfg := in.clusterConfig()
	annotations, err := netannotations.NewGenerator(cfg).Generate(vmi)
	if err != nil {
		return nil, fmt.Errorf("annotations.Generator.Generate: %w", err)
	}
	requested, err := hooks.UnmarshalHookSidecarList(vmi)
	if err != nil {
		return nil, fmt.Errorf("hooks.UnmarshalHookSidecarList: %w", err)
	}
	bindings, err := netbinding.NetBindingPluginSidecarList(vmi, cfg.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("netbinding.NetBindingPluginSidecarList: %w", err)
	}
	sidecars := []sidecarOut{}
	for i, sc := range append(requested, bindings...) {
		sidecars = append(sidecars, sidecarOut{
			HookSidecar: sc,
			DownwardAPI: string(sc.DownwardAPI),
			Container:   fmt.Sprintf("hook-sidecar-%d", i),
		})
	}
	return map[string]any{"annotations": annotations, "hookSidecars": sidecars}, nil
}

// networkInfo: annotations.Generator.GenerateFromActivePod on a pod carrying the given
// k8s.v1.cni.cncf.io/network-status; its kubevirt.io/network-info value is made by
// downwardapi.CreateNetworkInfoAnnotationValue. The map may also hold an updated networks
// annotation (KubeVirt's hot-plug path: interfaces missing from vmi.status.interfaces).
func networkInfo(in *input) (any, error) {
	vmi, err := in.vmi()
	if err != nil {
		return nil, err
	}
	status, err := rawString(in.NetworkStatus)
	if err != nil {
		return nil, fmt.Errorf("networkStatus: %w", err)
	}
	pod := &k8sv1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name:        "virt-launcher-" + vmi.Name,
		Namespace:   vmi.Namespace,
		Annotations: map[string]string{networkv1.NetworkStatusAnnot: status},
	}}
	annotations := netannotations.NewGenerator(in.clusterConfig()).GenerateFromActivePod(vmi, pod)
	var info json.RawMessage
	if value, ok := annotations[downwardapi.NetworkInfoAnnot]; ok {
		if err := json.Unmarshal([]byte(value), &info); err != nil {
			return nil, fmt.Errorf("%s is not JSON: %w", downwardapi.NetworkInfoAnnot, err)
		}
	}
	return map[string]any{"annotations": annotations, "networkInfo": info}, nil
}
