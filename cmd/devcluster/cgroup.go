package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cfsPeriodUS is the CFS period the CPU caps use: 100 ms, the kernel's default.
const cfsPeriodUS = 100000

// cgroupRoot is where the cgroup v1 hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cpuCgroup is one process's cgroup v1 CPU cap (--roomserver-cpu-quota): a directory in the
// cpu hierarchy with cpu.cfs_quota_us set, and one in the cpuacct hierarchy when that is
// mounted apart from cpu, so that cpuacct.usage counts the process's CPU time.
type cpuCgroup struct {
	// dirs are the cgroup's directories, the cpu hierarchy's first.
	dirs []string
}

// cgroupSet is the cgroups of one devcluster: <root>/<hierarchy>/devcluster-<pid>/<name>.
type cgroupSet struct {
	root   string
	parent string
	groups []*cpuCgroup
}

// checkCPUQuota says why --roomserver-cpu-quota cannot work here, or nil: it needs root and
// a writable cgroup v1 cpu hierarchy at root/cpu.
func checkCPUQuota(root string, quota float64) error {
	if quota <= 0 || quota > 64 {
		return fmt.Errorf("--roomserver-cpu-quota %g: want a fraction of one core per shard, more than 0 (e.g. 0.12)", quota)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("--roomserver-cpu-quota needs root: it writes cgroup v1 files under %s (running as uid %d)", filepath.Join(root, "cpu"), os.Geteuid())
	}
	if _, err := os.Stat(filepath.Join(root, "cpu", "cpu.cfs_quota_us")); err != nil {
		return fmt.Errorf("--roomserver-cpu-quota needs the cgroup v1 cpu controller at %s (cpu.cfs_quota_us): %w", filepath.Join(root, "cpu"), err)
	}
	return nil
}

// newCgroupSet prepares the cgroups of devcluster process pid under root; groups are made
// by add.
func newCgroupSet(root string, pid int) *cgroupSet {
	return &cgroupSet{root: root, parent: "devcluster-" + strconv.Itoa(pid)}
}

// hierarchies are the cgroup v1 hierarchies a cap lives in: cpu, and cpuacct when it is a
// mount of its own (where cpu and cpuacct are co-mounted, cpu has cpuacct.usage itself).
func (s *cgroupSet) hierarchies() []string {
	h := []string{filepath.Join(s.root, "cpu")}
	if _, err := os.Stat(filepath.Join(h[0], "cpuacct.usage")); err == nil {
		return h
	}
	if _, err := os.Stat(filepath.Join(s.root, "cpuacct", "cpuacct.usage")); err == nil {
		h = append(h, filepath.Join(s.root, "cpuacct"))
	}
	return h
}

// add makes the cgroup name capped at quota cores (0.12 is 12 ms of CPU time in every 100
// ms, summed over all cores).
func (s *cgroupSet) add(name string, quota float64) (*cpuCgroup, error) {
	g := &cpuCgroup{}
	for _, h := range s.hierarchies() {
		dir := filepath.Join(h, s.parent, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("--roomserver-cpu-quota: cgroup %s is not writable: %w", dir, err)
		}
		g.dirs = append(g.dirs, dir)
	}
	s.groups = append(s.groups, g)
	quotaUS := max(int64(quota*cfsPeriodUS), 1000) // the kernel's smallest quota is 1 ms
	if err := writeCgroupFile(g.dirs[0], "cpu.cfs_period_us", strconv.Itoa(cfsPeriodUS)); err != nil {
		return nil, err
	}
	if err := writeCgroupFile(g.dirs[0], "cpu.cfs_quota_us", strconv.FormatInt(quotaUS, 10)); err != nil {
		return nil, err
	}
	return g, nil
}

// addProcess moves pid (all its threads) into the cgroup; the threads it starts later are
// born in it.
func (g *cpuCgroup) addProcess(pid int) error {
	for _, dir := range g.dirs {
		if err := writeCgroupFile(dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// path is the cgroup's directory in the cpu hierarchy.
func (g *cpuCgroup) path() string { return g.dirs[0] }

// usage is the CPU time used by the cgroup's processes since it was made (cpuacct.usage).
func (g *cpuCgroup) usage() (time.Duration, error) {
	for _, dir := range g.dirs {
		b, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return time.Duration(ns), err
	}
	return 0, errors.New("no cpuacct.usage for the cgroup")
}

// throttled is how long the kernel held the cgroup's processes back at the cap (cpu.stat
// throttled_time).
func (g *cpuCgroup) throttled() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(g.dirs[0], "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "throttled_time "); ok {
			ns, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Duration(ns), err
		}
	}
	return 0, errors.New("no throttled_time in cpu.stat")
}

// remove deletes every cgroup and the devcluster-<pid> parents. Call it after the processes
// in them exited; an exited process can take a moment to leave its cgroup, so it retries
// for up to 5 s.
func (s *cgroupSet) remove() error {
	var dirs []string
	for _, g := range s.groups {
		dirs = append(dirs, g.dirs...)
	}
	for _, h := range s.hierarchies() {
		dirs = append(dirs, filepath.Join(h, s.parent))
	}
	var errs []error
	for _, dir := range dirs {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

func writeCgroupFile(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
		return fmt.Errorf("cgroup %s: write %s: %w", dir, file, err)
	}
	return nil
}
