// Command kubevirt-peer runs KubeVirt's own functions (kubevirt.io/kubevirt at the version
// go.mod pins) on one JSON (or YAML) object read from stdin, one subcommand each, so that
// kvnet's tests compare what kvnet emulates with what KubeVirt really writes. The shapes are
// in peers/README.md; in short, every input may carry "vmi" (a VirtualMachineInstance) and
// "kubevirt" (the KubeVirt CR; only spec.configuration is read):
//
//	kubevirt-peer version        -> "kubevirt.io/kubevirt v1.8.4"
//	kubevirt-peer annotation     {vmi, kubevirt}                 -> {annotations, hookSidecars}
//	kubevirt-peer network-info   {vmi, kubevirt, networkStatus}  -> {annotations, networkInfo}
//	kubevirt-peer domain         {vmi, kubevirt, networkInfo, disksInfo, defaults, hypervisorDeviceAvailable} -> domain XML
//	kubevirt-peer hooks          {hooksDir, sidecars, vmi, domainXML, timeoutSeconds, stage} -> {sidecars, callbacks, preCloudInitIso, onDefineDomain, domainXML, shutdown}
//
// Errors go to stderr with exit status 1 (2 for a usage error).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"sigs.k8s.io/yaml"

	v1 "kubevirt.io/api/core/v1"

	"kubevirt.io/kubevirt/pkg/os/disk"
	virtconfig "kubevirt.io/kubevirt/pkg/virt-config"

	"kubevirt.io/kubevirt/pkg/testutils"
)

// input is the union of every subcommand's fields; unknown fields are an error.
type input struct {
	VMI                       *v1.VirtualMachineInstance `json:"vmi"`
	KubeVirt                  *v1.KubeVirt               `json:"kubevirt"`
	NetworkStatus             json.RawMessage            `json:"networkStatus"`
	NetworkInfo               json.RawMessage            `json:"networkInfo"`
	Defaults                  *bool                      `json:"defaults"`
	HypervisorDeviceAvailable bool                       `json:"hypervisorDeviceAvailable"`
	DisksInfo                 map[string]*disk.DiskInfo  `json:"disksInfo"`
	HooksDir                  string                     `json:"hooksDir"`
	Sidecars                  uint                       `json:"sidecars"`
	DomainXML                 string                     `json:"domainXML"`
	TimeoutSeconds            int                        `json:"timeoutSeconds"`
	Stage                     string                     `json:"stage"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kubevirt-peer version|annotation|network-info|domain|hooks < input")
		os.Exit(2)
	}
	if os.Args[1] == "version" {
		fmt.Println(kubevirtVersion())
		return
	}
	if os.Args[1] == "crds" {
		check(printCRDs())
		return
	}
	if os.Args[1] == "hooks" && os.Getenv(hooksChildEnv) == "" {
		// The hook manager only looks in /var/run/kubevirt-hooks: run the subcommand again
		// in a private mount namespace where the given folder is mounted there (hooks.go).
		check(reexecWithHooksDir())
		return
	}
	in, err := readInput(os.Stdin)
	check(err)
	var out any
	switch os.Args[1] {
	case "annotation":
		out, err = annotation(in)
	case "network-info":
		out, err = networkInfo(in)
	case "domain":
		var xmlText string
		xmlText, err = domainXML(in)
		check(err)
		fmt.Println(xmlText)
		return
	case "hooks":
		out, err = runHooks(in)
	default:
		fmt.Fprintf(os.Stderr, "kubevirt-peer: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
	check(err)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	check(enc.Encode(out))
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-peer %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// kubevirtVersion is the kubevirt.io/kubevirt version this binary was built with.
func kubevirtVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == "kubevirt.io/kubevirt" {
				return dep.Path + " " + dep.Version
			}
		}
	}
	return "kubevirt.io/kubevirt (unknown version)"
}

func readInput(r io.Reader) (*input, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("stdin is not JSON or YAML: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	in := &input{}
	if err := dec.Decode(in); err != nil {
		return nil, fmt.Errorf("stdin: %w", err)
	}
	return in, nil
}

func (in *input) vmi() (*v1.VirtualMachineInstance, error) {
	if in.VMI == nil {
		return nil, fmt.Errorf(`input has no "vmi"`)
	}
	return in.VMI, nil
}

// clusterConfig is KubeVirt's own ClusterConfig (pkg/virt-config) over the given KubeVirt CR,
// held in an in-memory informer by KubeVirt's testutils.NewFakeClusterConfigUsingKVConfig,
// the way virt-controller, virt-handler and virt-api read spec.configuration.
func (in *input) clusterConfig() *virtconfig.ClusterConfig {
	conf := &v1.KubeVirtConfiguration{}
	if in.KubeVirt != nil {
		conf = in.KubeVirt.Spec.Configuration.DeepCopy()
	}
	cfg, _, _ := testutils.NewFakeClusterConfigUsingKVConfig(conf)
	return cfg
}

// rawString accepts either a JSON string (an annotation value as it is stored) or any JSON
// value (then marshalled compactly, as the annotation would hold it).
func rawString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", err
	}
	return buf.String(), nil
}
