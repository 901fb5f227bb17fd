package main

// virt-launcher's side of the hook sidecar protocol, with KubeVirt's own hook manager
// (pkg/hooks: hooks.GetManager, Collect, PreCloudInitIso, OnDefineDomain, Shutdown).

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"libvirt.org/go/libvirt"

	v1 "kubevirt.io/api/core/v1"

	cloudinit "kubevirt.io/kubevirt/pkg/cloud-init"
	"kubevirt.io/kubevirt/pkg/config"
	"kubevirt.io/kubevirt/pkg/defaults"
	"kubevirt.io/kubevirt/pkg/hooks"
	hooksInfo "kubevirt.io/kubevirt/pkg/hooks/info"
	grpcutil "kubevirt.io/kubevirt/pkg/util/net/grpc"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/api"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/cli"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/converter"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/network"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/util"
)

const hooksChildEnv = "KUBEVIRT_PEER_HOOKS_CHILD"

// reexecWithHooksDir runs this program again in a new mount namespace (a new user
// namespace too when not root) with the input's hooksDir mounted on
// hooks.HookSocketsSharedDirectory, the one folder hooks.GetManager looks in. When that
// folder does not exist, a tmpfs over its parent makes it, seen by the child only.
func reexecWithHooksDir() error {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	in, err := readInput(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if in.HooksDir == "" {
		return fmt.Errorf(`input has no "hooksDir"`)
	}
	dir, err := filepath.Abs(in.HooksDir)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	attr := &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	}
	proc, err := os.StartProcess(self, os.Args, &os.ProcAttr{
		Env:   append(os.Environ(), hooksChildEnv+"="+dir),
		Files: []*os.File{pipeFrom(raw), os.Stdout, os.Stderr},
		Sys:   attr,
	})
	if err != nil {
		return fmt.Errorf("a mount namespace for %s: %w", hooks.HookSocketsSharedDirectory, err)
	}
	state, err := proc.Wait()
	if err != nil {
		return err
	}
	os.Exit(state.ExitCode())
	return nil
}

func pipeFrom(data []byte) *os.File {
	r, w, err := os.Pipe()
	check(err)
	go func() {
		_, _ = w.Write(data)
		_ = w.Close()
	}()
	return r
}

// mountHooksDir (in the child) puts the hooks folder where hooks.GetManager looks.
func mountHooksDir(dir string) error {
	target := hooks.HookSocketsSharedDirectory
	if err := syscall.Mount("none", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	src, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer src.Close()
	if st, err := os.Stat(target); err != nil || !st.IsDir() {
		if err := syscall.Mount("tmpfs", filepath.Dir(target), "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", filepath.Dir(target), err)
		}
		if err := os.Mkdir(target, 0o755); err != nil {
			return err
		}
	}
	if err := syscall.Mount(fmt.Sprintf("/proc/self/fd/%d", src.Fd()), target, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", dir, target, err)
	}
	return nil
}

type callOut struct {
	Step   string `json:"step"`
	Input  string `json:"input"`
	Output string `json:"output"`
}

type hooksOut struct {
	Sidecars        []map[string]any               `json:"sidecars"`
	Callbacks       map[string][]map[string]string `json:"callbacks"`
	PreCloudInitIso map[string]any                 `json:"preCloudInitIso"`
	OnDefineDomain  []callOut                      `json:"onDefineDomain"`
	DomainXML       string                         `json:"domainXML"`
	Shutdown        string                         `json:"shutdown"`
}

// runHooks makes the calls virt-launcher makes over one start: Collect (Info on every
// socket, cmd/virt-launcher), PreCloudInitIso (LibvirtDomainManager.preStartHook), the
// OnDefineDomain calls of allocateHotplugPorts, then Shutdown (on virt-launcher's exit).
// "stage" splits that life in two for a VM that runs between them: "start" stops before
// Shutdown, "shutdown" collects the sidecars again and calls only Shutdown; "" does all.
func runHooks(in *input) (*hooksOut, error) {
	switch in.Stage {
	case "", "start", "shutdown":
	default:
		return nil, fmt.Errorf(`stage %q: want "start", "shutdown" or none`, in.Stage)
	}
	if err := mountHooksDir(os.Getenv(hooksChildEnv)); err != nil {
		return nil, err
	}
	vmi, err := in.vmi()
	if err != nil {
		return nil, err
	}
	vmi = vmi.DeepCopy()
	if err := in.applyDefaults(vmi, in.clusterConfig()); err != nil {
		return nil, err
	}
	spec := &api.DomainSpec{}
	if in.DomainXML == "" {
		if spec, err = domainSpec(in); err != nil {
			return nil, err
		}
	} else if err := xml.Unmarshal([]byte(in.DomainXML), spec); err != nil {
		return nil, fmt.Errorf("domainXML: %w", err)
	}
	timeout := time.Duration(in.TimeoutSeconds) * time.Second
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	n := in.Sidecars
	if n == 0 {
		entries, _ := os.ReadDir(hooks.HookSocketsSharedDirectory)
		for _, e := range entries {
			if e.IsDir() {
				n++
			}
		}
	}

	mgr := hooks.GetManager()
	if err := mgr.Collect(n, timeout); err != nil {
		return nil, fmt.Errorf("hooks Collect(%d): %w", n, err)
	}
	out := &hooksOut{Callbacks: collected(mgr), OnDefineDomain: []callOut{}}
	out.Sidecars, err = infos(out.Callbacks)
	if err != nil {
		return nil, err
	}
	if in.Stage == "shutdown" {
		out.Shutdown = "ok"
		if err := mgr.Shutdown(); err != nil {
			out.Shutdown = err.Error()
		}
		return out, nil
	}
	defer func() { // virt-launcher calls Shutdown on its way out, whatever happened
		if out.Shutdown == "" && in.Stage == "" {
			_ = mgr.Shutdown()
		}
	}()

	out.PreCloudInitIso, err = preCloudInitIso(mgr, vmi)
	if err != nil {
		return nil, err
	}
	if out.DomainXML, err = defineDomain(mgr, vmi, spec, &out.OnDefineDomain); err != nil {
		return nil, err
	}
	if in.Stage == "start" {
		out.Shutdown = "not called (stage start)"
		return out, nil
	}
	out.Shutdown = "ok"
	if err := mgr.Shutdown(); err != nil {
		out.Shutdown = err.Error()
	}
	return out, nil
}

// collected reads what Collect kept (hookManager.CallbacksPerHookPoint: socket and the
// version chosen, per hook point in call order); the manager's type is unexported.
func collected(mgr hooks.Manager) map[string][]map[string]string {
	out := map[string][]map[string]string{}
	m := reflect.ValueOf(mgr).Elem().FieldByName("CallbacksPerHookPoint")
	for it := m.MapRange(); it.Next(); {
		list := []map[string]string{}
		for i := 0; i < it.Value().Len(); i++ {
			cb := it.Value().Index(i).Elem()
			list = append(list, map[string]string{
				"socket":  relSocket(cb.FieldByName("SocketPath").String()),
				"version": cb.FieldByName("Version").String(),
			})
		}
		out[it.Key().String()] = list
	}
	return out
}

func relSocket(path string) string {
	return strings.TrimPrefix(path, hooks.HookSocketsSharedDirectory+"/")
}

// infos asks each collected socket's Info once more with KubeVirt's client
// (hooksInfo.NewInfoClient over grpcutil.DialSocketWithTimeout), to show what it said.
func infos(callbacks map[string][]map[string]string) ([]map[string]any, error) {
	seen := map[string]bool{}
	out := []map[string]any{}
	for _, point := range []string{hooksInfo.OnDefineDomainHookPointName, hooksInfo.PreCloudInitIsoHookPointName, hooksInfo.ShutdownHookPointName} {
		for _, cb := range callbacks[point] {
			if seen[cb["socket"]] {
				continue
			}
			seen[cb["socket"]] = true
			conn, err := grpcutil.DialSocketWithTimeout(filepath.Join(hooks.HookSocketsSharedDirectory, cb["socket"]), 1)
			if err != nil {
				return nil, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			res, err := hooksInfo.NewInfoClient(conn).Info(ctx, &hooksInfo.InfoParams{})
			cancel()
			conn.Close()
			if err != nil {
				return nil, fmt.Errorf("Info on %s: %w", cb["socket"], err)
			}
			points := []map[string]any{}
			for _, p := range res.GetHookPoints() {
				points = append(points, map[string]any{"name": p.GetName(), "priority": p.GetPriority()})
			}
			out = append(out, map[string]any{
				"socket": cb["socket"], "name": res.GetName(), "versions": res.GetVersions(),
				"hookPoints": points, "version": cb["version"],
			})
		}
	}
	return out, nil
}

// preCloudInitIso: the cloud-init data preStartHook reads from the VMI
// (cloudinit.ReadCloudInitVolumeDataSource) through hooksManager.PreCloudInitIso. Without
// a cloud-init volume that data is nil, which the manager dereferences when a sidecar
// subscribes: the panic is reported instead of killing the peer.
func preCloudInitIso(mgr hooks.Manager, vmi *v1.VirtualMachineInstance) (out map[string]any, err error) {
	data, err := cloudinit.ReadCloudInitVolumeDataSource(vmi, config.SecretSourceDir)
	if err != nil {
		return nil, fmt.Errorf("cloudinit.ReadCloudInitVolumeDataSource: %w", err)
	}
	out = map[string]any{"input": data}
	defer func() {
		if r := recover(); r != nil {
			out["panic"] = fmt.Sprint(r)
			out["panicIn"] = panicFrame()
			err = nil
		}
	}()
	res, err := mgr.PreCloudInitIso(vmi, data)
	if err != nil {
		return nil, fmt.Errorf("PreCloudInitIso: %w", err)
	}
	out["output"] = res
	return out, nil
}

// standInLibvirt is the libvirt connection virt-launcher's define path is given here: it
// keeps each defined XML and hands it back as the domain's XML (real libvirt would add
// its defaults and PCI addresses before handing it back).
type standInLibvirt struct {
	cli.Connection
	defined []string
}

func (c *standInLibvirt) DomainDefineXML(domainXML string) (cli.VirDomain, error) {
	c.defined = append(c.defined, domainXML)
	return &definedDomain{xml: domainXML}, nil
}

type definedDomain struct {
	cli.VirDomain
	xml string
}

func (d *definedDomain) GetXMLDesc(libvirt.DomainXMLFlags) (string, error) { return d.xml, nil }
func (d *definedDomain) Free() error                                       { return nil }

// panicFrame names the innermost kubevirt.io function on the panicking stack.
func panicFrame() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "kubevirt.io/") {
			return f.Function
		}
		if !more {
			return ""
		}
	}
}

// defineDomain: LibvirtDomainManager.allocateHotplugPorts (unexported; its counts and the
// root-port append are followed here line by line) over KubeVirt's own
// network.WithNetworkIfacesResources and util.SetDomainSpecStrWithHooks: without PCIe
// hot-plug one define; else one with calculatePlaceholderCount placeholder interfaces,
// whose read-back devices (interfaces put back) go into the defining call, and one more
// when calculateExtraControllerCount asks for root ports. SetDomainSpecStrWithHooks calls
// OnDefineDomain, parses the answer into api.DomainSpec over the spec (what the next call
// marshals) and defines the answer as it came.
func defineDomain(mgr hooks.Manager, vmi *v1.VirtualMachineInstance, spec *api.DomainSpec, calls *[]callOut) (string, error) {
	conn := &standInLibvirt{}
	step := "define"
	setDomain := func(v *v1.VirtualMachineInstance, s *api.DomainSpec) (cli.VirDomain, error) {
		sent, _ := xml.MarshalIndent(s, "", "\t") // what hookManager.OnDefineDomain sends
		dom, err := util.SetDomainSpecStrWithHooks(conn, v, s)
		if err != nil {
			return nil, fmt.Errorf("OnDefineDomain (%s): %w", step, err)
		}
		*calls = append(*calls, callOut{Step: step, Input: string(sent), Output: conn.defined[len(conn.defined)-1]})
		return dom, nil
	}
	last := func() string { return conn.defined[len(conn.defined)-1] }
	if !defaults.SupportsPCIeHotplug(&vmi.Spec) {
		_, err := setDomain(vmi, spec)
		if err != nil {
			return "", err
		}
		return last(), nil
	}
	onRootComplex := vmi.Annotations[v1.PlacePCIDevicesOnRootComplex] == "true"
	placeholders := 0 // calculatePlaceholderCount
	if total, ok := vmi.Annotations[v1.PciInterfaceSlotCountAnnotation]; ok {
		t, err := strconv.Atoi(total)
		if err != nil {
			return "", fmt.Errorf("%s: %w", v1.PciInterfaceSlotCountAnnotation, err)
		}
		placeholders = max(0, t-len(vmi.Spec.Domain.Devices.Interfaces))
	} else if n := len(vmi.Spec.Domain.Devices.Interfaces); !onRootComplex && n > 0 {
		placeholders = max(0, 4-n) // calculateHotplugPortCountV1
	}
	extra := 0
	if !onRootComplex { // calculateExtraControllerCount, calculateHotplugPortCountV2
		inUse, err := converter.CountPCIDevices(spec)
		if err != nil {
			return "", err
		}
		total, free := 8, 3
		if spec.Memory.Value > 2*1024*1024*1024 {
			total, free = 16, 6
		}
		extra = max(0, max(total-inUse, free)-placeholders)
	}
	if placeholders > 0 {
		step = "placeholders"
	}
	first := true
	_, err := network.WithNetworkIfacesResources(vmi, spec, placeholders, func(v *v1.VirtualMachineInstance, s *api.DomainSpec) (cli.VirDomain, error) {
		if !first {
			step = "define"
		}
		first = false
		return setDomain(v, s)
	})
	if err != nil || extra == 0 {
		if err != nil {
			return "", err
		}
		return last(), nil
	}
	next := 0 // appendPCIeRootPortControllers: after the highest pci index, up to bus index 31
	for _, c := range spec.Devices.Controllers {
		if idx, err := strconv.Atoi(c.Index); err == nil && c.Type == "pci" && idx > next {
			next = idx
		}
	}
	for i := 0; i < extra && next+1+i <= 31; i++ {
		spec.Devices.Controllers = append(spec.Devices.Controllers, api.Controller{Type: "pci", Index: strconv.Itoa(next + 1 + i), Model: "pcie-root-port"})
	}
	step = "root-ports"
	if _, err := setDomain(vmi, spec); err != nil {
		return "", err
	}
	return last(), nil
}
