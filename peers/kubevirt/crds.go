package main

// crds: KubeVirt's own CustomResourceDefinitions (KubeVirt, VirtualMachineInstance,
// VirtualMachine) as virt-operator generates them, printed as a JSON List, so a test can
// load them into the real kube-apiserver and validate kvnet's manifests against them.

import (
	"encoding/json"
	"os"

	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
)

func printCRDs() error {
	makers := []func() (*extv1.CustomResourceDefinition, error){
		components.NewKubeVirtCrd,
		components.NewVirtualMachineInstanceCrd,
		components.NewVirtualMachineCrd,
	}
	items := make([]*extv1.CustomResourceDefinition, 0, len(makers))
	for _, make := range makers {
		crd, err := make()
		if err != nil {
			return err
		}
		crd.APIVersion = "apiextensions.k8s.io/v1"
		crd.Kind = "CustomResourceDefinition"
		items = append(items, crd)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}
