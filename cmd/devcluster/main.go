// Command devcluster runs the polylith on one machine for development and end-to-end tests:
// a Kafka-protocol broker (franz-go's kfake, as its own process), a throwaway PostgreSQL
// cluster, every component as its own OS process in its own process group (the dendrite
// binary's component subcommand, roomserver as N shards), and a front proxy that routes the
// client API to clientapi and syncapi. It stays in the foreground; on SIGTERM or SIGINT it
// stops everything it started and removes its temporary directories.
//
//	devcluster --config FILE --http-bind-address 127.0.0.1:PORT [--roomserver-shards N]
//	    [--dendrite BINARY] [--broker-in-memory] [--roomserver-cpu-quota CORES] [--ready-timeout DURATION]
//	devcluster broker --addr 127.0.0.1:PORT [--data DIR]
//
// The config is the same file the monolith takes (global.server_name, global.data_dir,
// client_api.registration_disabled, client_api.registration_shared_secret...); devcluster
// overrides the log kind and brokers, the database and every listen/connect address for the
// processes it starts. docs/polylith.md documents the proxy's routing table. It gives up when
// a component is not ready within --ready-timeout (default 3m) of start-up.
//
// --roomserver-cpu-quota (root only, cgroup v1) caps each roomserver shard's CPU at a
// fraction of one core, each shard in a cgroup of its own (/sys/fs/cgroup/cpu/devcluster-PID/
// roomserver-N), removed when devcluster stops; /_devcluster/status then reports each
// shard's cgroup and CPU time. scripts/shardbench.sh uses it to measure how throughput
// scales with the number of shards.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/setup"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "broker" {
		err = broker(os.Args[2:])
	} else {
		err = run(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devcluster:", err)
		os.Exit(1)
	}
}

// stopWithParent asks the kernel for SIGTERM when devcluster's parent exits. `go run` exits
// on SIGTERM without passing it on; devcluster then stops everything as if it had been sent
// the signal itself, instead of living on with its processes.
func stopWithParent() error {
	ppid := os.Getppid()
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", errno)
	}
	if os.Getppid() != ppid {
		return errors.New("parent exited during start-up")
	}
	return nil
}

// options are devcluster's command line.
type options struct {
	config   string
	bind     string
	shards   int
	dendrite string
	// memoryBroker keeps the broker's log in memory only: killing the broker wipes it.
	memoryBroker bool
	// cpuQuota caps each roomserver shard at this many cores in a cgroup of its own (0: no cap).
	cpuQuota float64
	// readyTimeout bounds how long start waits for every component to be ready.
	readyTimeout time.Duration
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("devcluster", flag.ContinueOnError)
	fs.StringVar(&o.config, "config", "", "dendrite config file (the monolith's keys work); default: a development config in a temporary directory")
	fs.StringVar(&o.bind, "http-bind-address", "127.0.0.1:8008", "address of the front proxy serving the client API")
	fs.IntVar(&o.shards, "roomserver-shards", 1, "number of roomserver shards (processes)")
	fs.StringVar(&o.dendrite, "dendrite", "", "prebuilt dendrite binary (default: go build ./cmd/dendrite into a temporary directory)")
	fs.BoolVar(&o.memoryBroker, "broker-in-memory", false, "keep the broker's log in memory only, so that killing the broker wipes every topic (default: on disk in the temporary directory, so a killed broker restarts with its log)")
	fs.Float64Var(&o.cpuQuota, "roomserver-cpu-quota", 0, "cap each roomserver shard's CPU at this fraction of one core (e.g. 0.12), each shard in a cgroup v1 of its own under /sys/fs/cgroup/cpu; needs root (default: no cap)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 3*time.Minute, "how long to wait for every component's /ready at start-up before giving up (a loaded machine starts twenty processes slowly)")
	if err := fs.Parse(setup.NormaliseFlags(args)); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if o.shards < 1 {
		return o, errors.New("--roomserver-shards must be at least 1")
	}
	if o.readyTimeout <= 0 {
		return o, errors.New("--ready-timeout must be positive")
	}
	if o.cpuQuota != 0 {
		if err := checkCPUQuota(cgroupRoot, o.cpuQuota); err != nil {
			return o, err
		}
	}
	return o, nil
}

func run(args []string) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	logger := logrus.New()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err = stopWithParent(); err != nil {
		return err
	}
	c, err := start(ctx, o, logger)
	if err != nil {
		return err
	}
	return c.serve(ctx)
}
