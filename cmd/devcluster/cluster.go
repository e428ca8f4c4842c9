package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/freeport"
	"github.com/matrix-org/dendrite/internal/pgcluster"
)

// cluster is everything devcluster started.
type cluster struct {
	o      options
	log    *logrus.Logger
	tmp    string
	cfg    *config.Dendrite
	pg     *pgcluster.Cluster
	broker *proc
	// brokerData is the broker's log directory ("" with --broker-in-memory).
	brokerData string
	// procs are the components, in start order; stopped in reverse.
	procs    []*proc
	listener net.Listener
	client   *http.Client
	// cgroups are the shards' CPU caps (nil without --roomserver-cpu-quota).
	cgroups *cgroupSet
}

// start brings the whole polylith up and waits until every component is ready. On error
// it has stopped whatever it started.
func start(ctx context.Context, o options, logger *logrus.Logger) (_ *cluster, err error) {
	c := &cluster{o: o, log: logger, client: &http.Client{Timeout: 5 * time.Second}}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if c.tmp, err = os.MkdirTemp("", "devcluster"); err != nil {
		return nil, err
	}
	if err = c.loadConfig(); err != nil {
		return nil, err
	}
	binary, err := c.dendriteBinary(ctx)
	if err != nil {
		return nil, err
	}
	out := &lockedWriter{w: os.Stderr}
	if err = c.startBroker(ctx, out); err != nil {
		return nil, err
	}
	logger.Info("starting PostgreSQL")
	if c.pg, err = pgcluster.Start(ctx); err != nil {
		return nil, err
	}
	dsn, err := c.pg.CreateDatabase(ctx)
	if err != nil {
		return nil, err
	}
	cfgPath, err := c.writeComponentConfig(dsn)
	if err != nil {
		return nil, err
	}
	if c.listener, err = net.Listen("tcp", o.bind); err != nil {
		return nil, fmt.Errorf("front proxy: %w", err)
	}
	if err = c.startComponents(binary, cfgPath, out); err != nil {
		return nil, err
	}
	if err = c.waitReady(ctx, o.readyTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// loadConfig reads the user's config, or makes a development one, which also sets
// global.deny_networks: [] (a development cluster federates with servers on loopback).
func (c *cluster) loadConfig() error {
	path := c.o.config
	if path == "" {
		path = filepath.Join(c.tmp, "user.yaml")
		if err := os.WriteFile(path, config.DevConfig(filepath.Join(c.tmp, "data")), 0o600); err != nil {
			return err
		}
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if c.o.config == "" {
		cfg.Global.DenyNetworks = []string{}
	}
	if int32(c.o.shards) > cfg.Global.Log.Partitions {
		return fmt.Errorf("--roomserver-shards %d is more than global.log.partitions (%d)", c.o.shards, cfg.Global.Log.Partitions)
	}
	c.cfg = cfg
	return nil
}

// dendriteBinary is --dendrite, or the dendrite command built once into the temporary
// directory (from the module the working directory is in).
func (c *cluster) dendriteBinary(ctx context.Context) (string, error) {
	if c.o.dendrite != "" {
		return c.o.dendrite, nil
	}
	bin := filepath.Join(c.tmp, "dendrite")
	c.log.Info("building dendrite")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/matrix-org/dendrite/cmd/dendrite").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build dendrite (run from the repository, or pass --dendrite): %v\n%s", err, out)
	}
	return bin, nil
}

// startBroker runs `devcluster broker` as a process of its own, its log in the temporary
// directory unless --broker-in-memory, and waits for its port.
func (c *cluster) startBroker(ctx context.Context, out *lockedWriter) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	addr, err := freeport.Addr()
	if err != nil {
		return err
	}
	c.cfg.Global.Log.Kafka.Brokers = []string{addr}
	args := []string{self, "broker", "--addr", addr}
	if !c.o.memoryBroker {
		// On disk, so that the supervisor's restart after a crash (or a kill -9 in a
		// fault test) is a broker restart, not a wiped log.
		c.brokerData = filepath.Join(c.tmp, "broker")
		args = append(args, "--data", c.brokerData)
	}
	c.broker = newProc("broker", "broker", 0, "", out, c.log.WithField("component", "devcluster"), args...)
	go c.broker.supervise()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("broker did not listen on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeComponentConfig is the user's config with what devcluster decides: Kafka, the
// throwaway database, the shards and every process's addresses. It also makes the signing
// key every process shares.
func (c *cluster) writeComponentConfig(dsn string) (string, error) {
	cfg := c.cfg
	cfg.Global.Log.Kind = "kafka"
	cfg.Global.Database.ConnectionString = dsn
	for _, name := range config.Components {
		if db := cfg.DatabaseOf(name); db != nil {
			*db = config.DatabaseOptions{} // every component on the throwaway cluster
		}
	}
	for _, name := range config.Components {
		ia := cfg.InternalAPIOf(name)
		if ia == nil {
			continue // the roomserver shards get their addresses below
		}
		addr, err := freeport.Addr()
		if err != nil {
			return "", err
		}
		ia.Listen, ia.Connect = addr, "http://"+addr
	}
	var err error
	if cfg.ClientAPI.Listen, err = freeport.Addr(); err != nil {
		return "", err
	}
	if cfg.SyncAPI.Listen, err = freeport.Addr(); err != nil {
		return "", err
	}
	if cfg.FederationAPI.Listen, err = freeport.Addr(); err != nil {
		return "", err
	}
	if cfg.MediaAPI.Listen, err = freeport.Addr(); err != nil {
		return "", err
	}
	if cfg.PushServer.Listen, err = freeport.Addr(); err != nil {
		return "", err
	}
	if cfg.SearchAPI.Listen, err = freeport.Addr(); err != nil {
		return "", err
	}
	cfg.RoomServer.Shards = c.o.shards
	cfg.RoomServer.ShardConnect = nil
	for range c.o.shards {
		addr, err := freeport.Addr()
		if err != nil {
			return "", err
		}
		cfg.RoomServer.ShardConnect = append(cfg.RoomServer.ShardConnect, "http://"+addr)
	}
	cfg.RoomServer.InternalAPI.Listen, cfg.RoomServer.InternalAPI.Connect = "", ""
	if err = cfg.Verify(); err != nil {
		return "", err
	}
	if err = os.MkdirAll(cfg.Global.DataDir, 0o700); err != nil {
		return "", err
	}
	if _, _, err = config.LoadOrGenerateKey(cfg.SigningKeyPath()); err != nil {
		return "", fmt.Errorf("signing key: %w", err)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.tmp, "dendrite.yaml")
	return path, os.WriteFile(path, b, 0o600)
}

// startComponents starts every component process; they find each other (and wait for
// each other) through the config's connect URLs. With --roomserver-cpu-quota each shard
// gets its capped cgroup first.
func (c *cluster) startComponents(binary, cfgPath string, out *lockedWriter) error {
	log := c.log.WithField("component", "devcluster")
	add := func(name, component string, shard int, internal string, extra ...string) {
		args := append([]string{binary, "component", "--config", cfgPath, "--name", component}, extra...)
		p := newProc(name, component, shard, "http://"+internal+"/ready", out, log, args...)
		p.internal = internal
		c.procs = append(c.procs, p)
	}
	cfg := c.cfg
	for _, name := range config.Components {
		if ia := cfg.InternalAPIOf(name); ia != nil {
			add(name, name, 0, ia.Listen)
			continue
		}
		for i, u := range cfg.RoomServer.ShardConnect {
			internal := u[len("http://"):]
			add("roomserver-"+strconv.Itoa(i), "roomserver", i, internal, "--shard", strconv.Itoa(i), "--internal-listen", internal)
		}
	}
	if c.o.cpuQuota > 0 {
		c.cgroups = newCgroupSet(cgroupRoot, os.Getpid())
		for _, p := range c.procs {
			if p.component != "roomserver" {
				continue
			}
			g, err := c.cgroups.add(p.name, c.o.cpuQuota)
			if err != nil {
				return err
			}
			p.cgroup = g
			log.WithFields(logrus.Fields{"process": p.name, "cgroup": g.path(), "cores": c.o.cpuQuota}).Info("CPU capped")
		}
	}
	for _, p := range c.procs {
		go p.supervise()
	}
	return nil
}

// waitReady polls every component's /ready until all answer 200.
func (c *cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var waiting []string
		for _, p := range c.procs {
			if !p.ready(ctx, c.client) {
				waiting = append(waiting, p.name)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("components not ready after %v: %v", timeout, waiting)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serve runs the front proxy until ctx ends, then stops everything.
func (c *cluster) serve(ctx context.Context) error {
	defer c.stop()
	srv := &http.Server{Handler: newProxy(c), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(c.listener) }()
	c.log.WithFields(logrus.Fields{"address": c.listener.Addr().String(), "roomserver_shards": c.o.shards}).Info("devcluster ready")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// stop stops the components (clientapi first), the broker and PostgreSQL, and removes the
// temporary directory.
func (c *cluster) stop() {
	c.log.Info("devcluster stopping")
	var wg sync.WaitGroup
	// Writers and readers first, then the shards and the userapi they call.
	stopAll := func(ps []*proc) {
		for _, p := range ps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.stop(15 * time.Second)
			}()
		}
		wg.Wait()
	}
	var front, back []*proc
	for _, p := range c.procs {
		if p.component == "clientapi" || p.component == "syncapi" || p.component == "federationapi" || p.component == "mediaapi" ||
			p.component == "pushserver" || p.component == "searchapi" {
			front = append(front, p)
		} else {
			back = append(back, p)
		}
	}
	stopAll(front)
	stopAll(back)
	if c.broker != nil {
		c.broker.stop(5 * time.Second)
	}
	if c.cgroups != nil {
		if err := c.cgroups.remove(); err != nil {
			c.log.WithError(err).Warn("removing the shards' cgroups failed")
		}
	}
	if c.listener != nil {
		_ = c.listener.Close() // already closed when the proxy served
	}
	if c.pg != nil {
		if err := c.pg.Stop(); err != nil {
			c.log.WithError(err).Warn("stopping PostgreSQL failed")
		}
	}
	if c.tmp != "" {
		if err := os.RemoveAll(c.tmp); err != nil {
			c.log.WithError(err).Warn("removing the temporary directory failed")
		}
	}
}
