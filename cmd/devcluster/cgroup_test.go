package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// needCgroupRoot skips tests that write real cgroups: they need root and a cgroup v1 cpu
// hierarchy, as --roomserver-cpu-quota does.
func needCgroupRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: not root, and --roomserver-cpu-quota writes cgroup v1 files under /sys/fs/cgroup/cpu")
	}
	if err := checkCPUQuota(cgroupRoot, 0.5); err != nil {
		t.Skipf("skipped: no writable cgroup v1 cpu hierarchy: %v", err)
	}
}

// cgroupFile is one file of a cgroup, trimmed.
func cgroupFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestCheckCPUQuota: a quota that is no fraction of a core, or a machine without a cgroup v1
// cpu hierarchy, is refused before anything starts, with a message naming the flag.
func TestCheckCPUQuota(t *testing.T) {
	for _, q := range []float64{-0.1, 65} {
		if err := checkCPUQuota(cgroupRoot, q); err == nil || !strings.Contains(err.Error(), "--roomserver-cpu-quota") {
			t.Errorf("quota %g: got %v, want an error naming the flag", q, err)
		}
	}
	err := checkCPUQuota(t.TempDir(), 0.12)
	if err == nil || !strings.Contains(err.Error(), "--roomserver-cpu-quota needs") {
		t.Fatalf("no cgroup hierarchy: got %v, want an error saying what the flag needs", err)
	}
	if _, err := parse([]string{"--roomserver-cpu-quota", "0"}); err != nil {
		t.Errorf("--roomserver-cpu-quota 0 (no cap) refused: %v", err)
	}
}

// TestCgroupSet makes a capped cgroup for a real process, reads its CPU time and removes
// it (and its devcluster-<pid> parent) after the process exited.
func TestCgroupSet(t *testing.T) {
	needCgroupRoot(t)
	s := newCgroupSet(cgroupRoot, os.Getpid())
	// 1% of a core: the least the kernel allows (1 ms a period), so that even a loaded
	// machine gives the loop more than its cap and the kernel throttles it.
	g, err := s.add("roomserver-0", 0.01)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.remove() }) // a failed test leaves nothing behind either
	if got := cgroupFile(t, g.path(), "cpu.cfs_quota_us"); got != "1000" {
		t.Errorf("cpu.cfs_quota_us = %s, want 1000 (1%% of the 100 ms period)", got)
	}
	if got := cgroupFile(t, g.path(), "cpu.cfs_period_us"); got != "100000" {
		t.Errorf("cpu.cfs_period_us = %s, want 100000", got)
	}
	// A busy shell loop, so that the cgroup accrues CPU time and hits its cap.
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err = cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err = g.addProcess(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		t.Fatal(err)
	}
	if got := cgroupFile(t, g.path(), "cgroup.procs"); got != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("cgroup.procs = %q, want the process %d", got, cmd.Process.Pid)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		used, uerr := g.usage()
		throttled, terr := g.throttled()
		if uerr != nil || terr != nil {
			_ = cmd.Process.Kill()
			t.Fatal(uerr, terr)
		}
		if used >= 20*time.Millisecond && throttled > 0 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("after a minute the loop used %v CPU, throttled %v; want >= 20ms and throttled", used, throttled)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill() // it runs until killed
	_ = cmd.Wait()         // killed, as meant
	if err = s.remove(); err != nil {
		t.Fatal(err)
	}
	for _, h := range s.hierarchies() {
		if _, err := os.Stat(filepath.Join(h, s.parent)); !os.IsNotExist(err) {
			t.Errorf("%s still exists after remove (%v)", filepath.Join(h, s.parent), err)
		}
	}
}

// TestPolylithCPUQuota runs devcluster with --roomserver-cpu-quota: each shard's process,
// and its replacement after a crash, is in a cgroup of its own with the cap; no other
// component is capped; status reports each shard's CPU time; and stopping devcluster removes
// the cgroups.
func TestPolylithCPUQuota(t *testing.T) {
	needCgroupRoot(t)
	d := startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2, "--roomserver-cpu-quota", "0.3")
	st := d.waitReady(t, func(clusterStatus) bool { return true })
	parents := map[string]bool{}
	for _, p := range st.Processes {
		if p.Component != "roomserver" {
			if p.CPUCgroup != "" {
				t.Errorf("%s capped in %s; only roomserver shards are", p.Name, p.CPUCgroup)
			}
			continue
		}
		if p.CPUCgroup != filepath.Join(cgroupRoot, "cpu", "devcluster-"+strconv.Itoa(d.cmd.Process.Pid), p.Name) {
			t.Fatalf("%s: cgroup %q", p.Name, p.CPUCgroup)
		}
		parents[filepath.Dir(p.CPUCgroup)] = true
		if got := cgroupFile(t, p.CPUCgroup, "cpu.cfs_quota_us"); got != "30000" {
			t.Errorf("%s: cpu.cfs_quota_us = %s, want 30000", p.Name, got)
		}
		if procs := strings.Fields(cgroupFile(t, p.CPUCgroup, "cgroup.procs")); len(procs) != 1 || procs[0] != strconv.Itoa(p.PID) {
			t.Errorf("%s: cgroup.procs %v, want its PID %d", p.Name, procs, p.PID)
		}
		if p.CPUSeconds <= 0 {
			t.Errorf("%s: cpu_seconds %v after start-up, want > 0", p.Name, p.CPUSeconds)
		}
	}
	if len(parents) != 1 {
		t.Fatalf("shards' cgroups under %v, want one devcluster-<pid>", parents)
	}
	// A crashed shard's replacement goes into the same cgroup.
	old := d.process(t, "roomserver-1")
	signalProcess(t, old, syscall.SIGKILL)
	d.waitReady(t, func(st clusterStatus) bool {
		for _, p := range st.Processes {
			if p.Name == old.Name {
				return p.Starts > old.Starts
			}
		}
		return false
	})
	restarted := d.process(t, "roomserver-1")
	if procs := strings.Fields(cgroupFile(t, restarted.CPUCgroup, "cgroup.procs")); len(procs) != 1 || procs[0] != strconv.Itoa(restarted.PID) {
		t.Errorf("restarted shard: cgroup.procs %v, want its new PID %d", procs, restarted.PID)
	}
	d.stop()
	for parent := range parents {
		if _, err := os.Stat(parent); !os.IsNotExist(err) {
			t.Errorf("%s still exists after devcluster stopped (%v)", parent, err)
		}
	}
}
