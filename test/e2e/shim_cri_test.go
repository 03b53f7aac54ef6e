//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestShimCRI makes the kubelet's calls against containerd's CRI plugin with the runtime
// handler "firegopher": a pod (its sandbox held by the shim, no VM) with a container that
// runs to its end and one that runs until stopped, the CRI log file, ExecSync (kubectl
// exec), stop and removal. The pod is on the host network (TestShimCRIPodNetwork has one on
// a CNI bridge).
func TestShimCRI(t *testing.T) {
	c := startContainerd(t, true)
	rt := c.criClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := rt.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("CRI version: %v\n%s", err, c.logBytes)
	}

	logDir := filepath.Join(c.dir, "pod-logs")
	podConfig := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web", Uid: "uid-web-1", Namespace: "e2e", Attempt: 0},
		Hostname:     "web",
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}
	pod, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig, RuntimeHandler: "firegopher"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	podID := pod.PodSandboxId
	if dirs := c.vmDirs(); len(dirs) != 0 {
		t.Fatalf("the pod's sandbox booted a VM: %v", dirs)
	}

	create := func(name string, cmd ...string) string {
		t.Helper()
		r, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: podID, SandboxConfig: podConfig,
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: name},
				Image:    &runtimeapi.ImageSpec{Image: shimImage},
				Command:  cmd,
				LogPath:  name + ".log",
				Envs:     []*runtimeapi.KeyValue{{Key: "FROM_KUBELET", Value: "yes"}},
			},
		})
		if err != nil {
			t.Fatalf("CreateContainer %s: %v", name, err)
		}
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: r.ContainerId}); err != nil {
			t.Fatalf("StartContainer %s: %v", name, err)
		}
		return r.ContainerId
	}
	waitExited := func(id string) *runtimeapi.ContainerStatus {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			st, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if err != nil {
				t.Fatalf("ContainerStatus: %v", err)
			}
			if st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
				return st.Status
			}
			if time.Now().After(deadline) {
				t.Fatalf("container %s did not exit: %v", id, st.Status.State)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// A long-running container (kubectl exec, then a stop), and beside it, in the same pod
	// with the same hostname, one that runs to its end.
	server := create("server", "sh", "-c", "echo serving; exec sleep 600")
	waitForLog(t, filepath.Join(logDir, "server.log"), "serving")
	// The job's exit code and CRI log file.
	job := create("job", "sh", "-c", "echo hello-cri $FROM_KUBELET; echo to-stderr >&2; exit 3")
	st := waitExited(job)
	if st.ExitCode != 3 {
		t.Fatalf("job: exit code %d, want 3 (%s)", st.ExitCode, st.Message)
	}
	logText := waitForLog(t, filepath.Join(logDir, "job.log"), "to-stderr")
	// CRI log lines: TIMESTAMP STREAM TAG MESSAGE.
	if !strings.Contains(logText, " stdout F hello-cri yes\n") || !strings.Contains(logText, " stderr F to-stderr\n") {
		t.Fatalf("job.log:\n%s", logText)
	}

	ex, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: server, Cmd: []string{"sh", "-c", "echo in-exec $FROM_KUBELET; exit 4"}, Timeout: 60})
	if err != nil {
		t.Fatalf("ExecSync: %v", err)
	}
	if ex.ExitCode != 4 || string(ex.Stdout) != "in-exec yes\n" {
		t.Fatalf("ExecSync: exit %d, stdout %q, stderr %q", ex.ExitCode, ex.Stdout, ex.Stderr)
	}
	// kubectl top's numbers: what the host pays for the VM.
	stats, err := rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: server})
	if err != nil {
		t.Fatalf("ContainerStats: %v", err)
	}
	if s := stats.Stats; s.Memory == nil || s.Memory.WorkingSetBytes == nil || s.Memory.WorkingSetBytes.Value < 16<<20 ||
		s.Cpu == nil || s.Cpu.UsageCoreNanoSeconds == nil || s.Cpu.UsageCoreNanoSeconds.Value == 0 {
		t.Fatalf("ContainerStats: want the VMM's memory and CPU time: %+v", s)
	}
	if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: server, Timeout: 30}); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	if st := waitExited(server); st.ExitCode != 143 {
		t.Fatalf("server after StopContainer: exit code %d, want 143", st.ExitCode)
	}

	for _, id := range []string{job, server} {
		if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("RemoveContainer: %v", err)
		}
	}
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	if dirs := c.vmDirs(); len(dirs) != 0 {
		t.Fatalf("VM directories left: %v", dirs)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(shimPids(c.dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the pod's shim did not exit: %v", shimPids(c.dir))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitForLog polls a CRI log file until it contains want, bounded, and returns it.
func waitForLog(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q:\n%s", path, want, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestShimCRIPodNetwork runs a pod on a CNI bridge network (Debian's
// containernetworking-plugins), with containerd inside a network namespace the test makes,
// so the bridge and every veth stay in there: the container's VM has the pod's IP (its TAP
// in the pod's namespace, tc-redirected to the CNI veth) and answers HTTP on it from the
// test's namespace.
func TestShimCRIPodNetwork(t *testing.T) {
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatal("/usr/lib/cni/bridge: install the Debian package containernetworking-plugins")
	}
	ns := fmt.Sprintf("fg-cri-%d", os.Getpid())
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip(t, "-n", ns, "link", "set", "lo", "up")
	c := startContainerdIn(t, true, ns)
	rt := c.criClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	podConfig := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "net", Uid: "uid-net-1", Namespace: "e2e"},
		Hostname:     "net",
		LogDirectory: filepath.Join(c.dir, "pod-logs"),
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.77.0.53"}},
	}
	pod, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig, RuntimeHandler: "firegopher"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	status, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.PodSandboxId})
	if err != nil || status.Status.Network == nil || status.Status.Network.Ip == "" {
		t.Fatalf("PodSandboxStatus: no pod IP: %v %v", err, status)
	}
	podIP := status.Status.Network.Ip
	cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.PodSandboxId, SandboxConfig: podConfig,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "web"},
			Image:    &runtimeapi.ImageSpec{Image: shimImage},
			Command:  []string{"sh", "-c", "grep nameserver /etc/resolv.conf > /srv/data/dns.txt; ip -4 addr show > /srv/data/addr.txt; exec httpd -f -p 80 -h /srv/data"},
			LogPath:  "web.log",
		},
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	get := func(path string) (string, bool) {
		out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sf", "--max-time", "3", "http://"+podIP+path).Output()
		return string(out), err == nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if body, ok := get("/hello.txt"); ok {
			if body != "hello from the image\n" {
				t.Fatalf("GET /hello.txt from the pod IP: %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pod never answered on %s:80", podIP)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if addr, _ := get("/addr.txt"); !strings.Contains(addr, podIP+"/24") {
		t.Fatalf("the guest's addresses do not hold the pod IP %s:\n%s", podIP, addr)
	}
	if dns, _ := get("/dns.txt"); !strings.Contains(dns, "10.77.0.53") {
		t.Fatalf("the guest's resolv.conf lacks the pod's DNS server: %q", dns)
	}
	if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: cr.ContainerId, Timeout: 10}); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	if dirs := c.vmDirs(); len(dirs) != 0 {
		t.Fatalf("VM directories left: %v", dirs)
	}
	if out, _ := exec.Command("ip", "-n", ns, "-o", "link", "show", "type", "veth").Output(); strings.TrimSpace(string(out)) != "" {
		t.Fatalf("pod veths left in the test namespace:\n%s", out)
	}
}

// criClient imports the busybox test image into the k8s.io namespace and returns a CRI
// client of c's CRI plugin, closed when the test ends.
func (c *containerd) criClient(t *testing.T) runtimeapi.RuntimeServiceClient {
	t.Helper()
	tarPath := filepath.Join(c.dir, "busybox.tar")
	busyboxImage(t, tarPath)
	if r := c.ctr("-n", "k8s.io", "image", "import", tarPath); r.code != 0 {
		t.Fatalf("ctr image import: %s", r)
	}
	conn, err := grpc.NewClient("unix://"+c.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}
