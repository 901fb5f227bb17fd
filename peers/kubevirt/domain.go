package main

// The domain virt-launcher makes from a VMI, before any hook sidecar sees it.

import (
	"encoding/xml"
	"fmt"
	"path/filepath"
	"runtime"

	v1 "kubevirt.io/api/core/v1"

	"kubevirt.io/kubevirt/pkg/defaults"
	ephemeraldisk "kubevirt.io/kubevirt/pkg/ephemeral-disk"
	cmdv1 "kubevirt.io/kubevirt/pkg/handler-launcher-com/cmd/v1"
	"kubevirt.io/kubevirt/pkg/network/domainspec"
	"kubevirt.io/kubevirt/pkg/network/vmispec"
	virtconfig "kubevirt.io/kubevirt/pkg/virt-config"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/api"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter/arch"
	convertertypes "kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter/types"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/device/hostdevice/sriov"
)

// domainXML is the domain as the hook manager hands it to the first OnDefineDomain:
// xml.MarshalIndent(spec, "", "\t") (hooks.hookManager.OnDefineDomain).
func domainXML(in *input) (string, error) {
	spec, err := domainSpec(in)
	if err != nil {
		return "", err
	}
	out, err := xml.MarshalIndent(spec, "", "\t")
	return string(out), err
}

// applyDefaults is virt-api's mutators.ApplyNewVMIMutations, what the VMI mutating webhook
// does on create (skipped with "defaults": false): defaults.SetDefaultVirtualMachineInstance
// and the three steps after it, followed here line by line because the mutators package
// costs over 3 s at start-up (the init of pkg/virt-api/definitions).
func (in *input) applyDefaults(vmi *v1.VirtualMachineInstance, cfg *virtconfig.ClusterConfig) error {
	if in.Defaults != nil && !*in.Defaults {
		return nil
	}
	if err := defaults.SetDefaultVirtualMachineInstance(cfg, vmi); err != nil {
		return fmt.Errorf("defaults.SetDefaultVirtualMachineInstance: %w", err)
	}
	if vmi.Annotations == nil {
		vmi.Annotations = map[string]string{}
	}
	if _, ok := vmi.Annotations[v1.PciTopologyVersionAnnotation]; !ok && defaults.SupportsPCIeHotplug(&vmi.Spec) {
		vmi.Annotations[v1.PciTopologyVersionAnnotation] = v1.PciTopologyVersionV3 // setDefaultPciTopologyVersion
	}
	if vmi.Spec.Domain.CPU.IsolateEmulatorThread && cfg.AlignCPUsEnabled() {
		if _, ok := cfg.GetConfigFromKubeVirtCR().Annotations[v1.EmulatorThreadCompleteToEvenParity]; ok {
			vmi.Annotations[v1.EmulatorThreadCompleteToEvenParity] = ""
		}
	}
	if !cfg.RootEnabled() {
		vmi.Status.RuntimeUser = 107 // markAsNonroot
	}
	return nil
}

// domainSpec follows virt-launcher's LibvirtDomainManager.SyncVMI up to the domain the
// hooks get: the VMI as virt-api's mutating webhook defaults it on create
// (applyDefaults), the ConverterContext of
// generateConverterContext with what virt-handler's options carry (virtualMachineOptions,
// domainspec.DomainAttachmentByInterfaceName), SR-IOV hostdevs from network-info
// (sriov.CreateHostDevices reads it from /etc/podinfo/network-info; here from the input),
// converter.Convert_v1_VirtualMachineInstance_To_api_Domain, then api.NewDefaulter.
// Not done (needs the pod or libvirt): netsetup's phase 2 (it fills <mac>/<mtu> of
// masquerade and bridge interfaces from the pod), disk probing ("disksInfo" gives
// qemu-img's answer per container disk volume), EFI firmware paths.
func domainSpec(in *input) (*api.DomainSpec, error) {
	vmi, err := in.vmi()
	if err != nil {
		return nil, err
	}
	vmi = vmi.DeepCopy()
	cfg := in.clusterConfig()
	if err := in.applyDefaults(vmi, cfg); err != nil {
		return nil, err
	}
	sriovDevices, err := sriovHostDevices(vmi, in)
	if err != nil {
		return nil, err
	}
	smbios := cfg.GetSMBIOS()
	c := &convertertypes.ConverterContext{
		Architecture:              arch.NewConverter(runtime.GOARCH),
		VirtualMachine:            vmi,
		AllowEmulation:            cfg.AllowEmulation(),
		HypervisorDeviceAvailable: in.HypervisorDeviceAvailable,
		UseVirtioTransitional:     vmi.Spec.Domain.Devices.UseVirtioTransitional != nil && *vmi.Spec.Domain.Devices.UseVirtioTransitional,
		EphemeraldiskCreator:      ephemeraldisk.NewEphemeralDiskCreator(filepath.Join("/var/run/kubevirt-ephemeral-disks", "disk-data")),
		// generateConverterContext's isFreePageReportingEnabled / isSerialConsoleLogEnabled
		// (unexported there) with the cluster settings virt-handler passes.
		FreePageReporting: !cfg.IsFreePageReportingDisabled() &&
			(vmi.Spec.Domain.Devices.AutoattachMemBalloon == nil || *vmi.Spec.Domain.Devices.AutoattachMemBalloon) &&
			!vmi.IsHighPerformanceVMI() && vmi.GetAnnotations()[v1.FreePageReportingDisabledAnnotation] != "true",
		SerialConsoleLog: (vmi.Spec.Domain.Devices.LogSerialConsole != nil && *vmi.Spec.Domain.Devices.LogSerialConsole) ||
			(vmi.Spec.Domain.Devices.LogSerialConsole == nil && !cfg.IsSerialConsoleLogDisabled()),
		BochsForEFIGuests:               !cfg.VGADisplayForEFIGuestsEnabled(),
		ExpandDisksEnabled:              cfg.ExpandDisksEnabled(),
		PCINUMAAwareTopologyEnabled:     cfg.PCINUMAAwareTopologyEnabled(),
		MemBalloonStatsPeriod:           uint(cfg.GetMemBalloonStatsPeriod()),
		DomainAttachmentByInterfaceName: domainspec.DomainAttachmentByInterfaceName(vmi.Spec.Domain.Devices.Interfaces, cfg.GetNetworkBindings()),
		SRIOVDevices:                    sriovDevices,
		DisksInfo:                       in.DisksInfo, // virt-launcher's qemu-img info of container disks
		HypervisorName:                  cfg.GetHypervisor().Name,
	}
	if smbios != nil {
		c.SMBios = &cmdv1.SMBios{Family: smbios.Family, Product: smbios.Product, Manufacturer: smbios.Manufacturer, Sku: smbios.Sku, Version: smbios.Version}
	}
	domain := &api.Domain{}
	if err := converter.Convert_v1_VirtualMachineInstance_To_api_Domain(vmi, domain, c); err != nil {
		return nil, fmt.Errorf("converter.Convert_v1_VirtualMachineInstance_To_api_Domain: %w", err)
	}
	api.NewDefaulter(c.Architecture.GetArchitecture()).SetObjectDefaults_Domain(domain)
	return &domain.Spec, nil
}

// sriovHostDevices: sriov.CreateHostDevices without its file: the `sriov: {}` interfaces
// whose vmi.status.interfaces entry names multus-status as a source, each given its PCI
// address from network-info by sriov.CreateHostDevicesFromIfacesAndPool.
func sriovHostDevices(vmi *v1.VirtualMachineInstance, in *input) ([]api.HostDevice, error) {
	ifaces := vmispec.FilterInterfacesSpec(vmi.Spec.Domain.Devices.Interfaces, func(iface v1.Interface) bool {
		if iface.SRIOV == nil {
			return false
		}
		status := vmispec.LookupInterfaceStatusByName(vmi.Status.Interfaces, iface.Name)
		return status != nil && vmispec.ContainsInfoSource(status.InfoSource, vmispec.InfoSourceMultusStatus)
	})
	if len(ifaces) == 0 {
		return []api.HostDevice{}, nil
	}
	info, err := rawString(in.NetworkInfo)
	if err != nil {
		return nil, fmt.Errorf("networkInfo: %w", err)
	}
	pool, err := sriov.NewPCIAddressPoolWithNetworkStatus([]byte(info))
	if err != nil {
		return nil, err
	}
	if pool.Len() == 0 {
		return nil, fmt.Errorf("found no SR-IOV networks to PCI-Address mapping")
	}
	return sriov.CreateHostDevicesFromIfacesAndPool(ifaces, pool)
}
