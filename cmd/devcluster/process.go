package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// proc is one supervised child process in its own process group. Like a Kubernetes
// Deployment, the supervisor starts it again when it exits unexpectedly (a crash, or a
// kill -9 in a fault test), until stop.
type proc struct {
	name      string // "roomserver-1"
	component string
	shard     int
	args      []string
	// readyURL is polled for readiness ("" for none).
	readyURL string
	// internal is the host:port of the process's internal listener ("" for none).
	internal string
	log      *logrus.Entry
	out      io.Writer
	// cgroup caps the process's CPU (--roomserver-cpu-quota); nil for none.
	cgroup *cpuCgroup

	mu       sync.Mutex
	cmd      *exec.Cmd
	starts   int
	stopping bool
	wake     chan struct{} // closed by stop to cut a restart delay short
	done     chan struct{} // closed when the supervisor returns
}

func newProc(name, component string, shard int, readyURL string, out io.Writer, log *logrus.Entry, args ...string) *proc {
	return &proc{
		name: name, component: component, shard: shard, args: args, readyURL: readyURL,
		log: log.WithField("process", name), out: out, wake: make(chan struct{}), done: make(chan struct{}),
	}
}

// childEnv is this process's environment without DENDRITE_* overrides: the config file
// devcluster writes is the whole truth for its children.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DENDRITE_") {
			env = append(env, kv)
		}
	}
	return env
}

// supervise runs the process until stop, restarting it when it exits.
func (p *proc) supervise() {
	defer close(p.done)
	for {
		cmd := exec.Command(p.args[0], p.args[1:]...)
		// Its own process group, so that stop reaches every process it started; and killed
		// if devcluster itself dies without stopping it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		w := &prefixWriter{out: p.out, prefix: "[" + p.name + "] "}
		cmd.Stdout, cmd.Stderr = w, w
		cmd.Env = childEnv()
		p.mu.Lock()
		if p.stopping {
			p.mu.Unlock()
			return
		}
		err := cmd.Start()
		if err == nil {
			p.cmd = cmd
			p.starts++
		}
		p.mu.Unlock()
		if err == nil && p.cgroup != nil {
			if cerr := p.cgroup.addProcess(cmd.Process.Pid); cerr != nil {
				// Uncapped, it would make a benchmark's figures wrong without a sign.
				p.log.WithError(cerr).Error("could not cap the process's CPU; killing it")
				_ = cmd.Process.Kill() // Wait below reaps it; the supervisor tries again
			}
		}
		if err == nil {
			p.log.WithField("pid", cmd.Process.Pid).Info("process started")
			err = cmd.Wait()
			w.flush()
		}
		p.mu.Lock()
		p.cmd = nil
		stopping := p.stopping
		p.mu.Unlock()
		if stopping {
			return
		}
		p.log.WithError(err).Warn("process exited; restarting")
		select {
		case <-p.wake:
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// pid is the running process's ID, 0 when none runs.
func (p *proc) pid() (pid, starts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0, p.starts
	}
	return p.cmd.Process.Pid, p.starts
}

// stop sends SIGTERM to the process group and waits; after grace it kills the group.
func (p *proc) stop(grace time.Duration) {
	p.mu.Lock()
	if !p.stopping {
		p.stopping = true
		close(p.wake)
	}
	var pgid int
	if p.cmd != nil {
		pgid = p.cmd.Process.Pid
	}
	p.mu.Unlock()
	if pgid != 0 {
		_ = syscall.Kill(-pgid, syscall.SIGTERM) // the group may be gone already
	}
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	p.log.Warn("process ignored SIGTERM; killing its group")
	if pgid != 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // the group may be gone already
	}
	<-p.done
}

// ready polls the process's /ready once.
func (p *proc) ready(ctx context.Context, client *http.Client) bool {
	if p.readyURL == "" {
		pid, _ := p.pid()
		return pid != 0
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.readyURL, nil)
	if err != nil {
		return false
	}
	res, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, res.Body) // only the status matters
	_ = res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// prefixWriter writes whole lines to out, each starting with prefix.
type prefixWriter struct {
	out    io.Writer
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.line(w.buf[:i+1])
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
}

func (w *prefixWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.line(append(w.buf, '\n'))
		w.buf = nil
	}
}

func (w *prefixWriter) line(l []byte) {
	_, _ = io.WriteString(w.out, w.prefix+string(l)) // losing a log line is all that can happen
}

// lockedWriter serializes the lines of every child on one output.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
