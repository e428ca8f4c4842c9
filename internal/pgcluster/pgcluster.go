// Package pgcluster starts a throwaway PostgreSQL cluster from the machine's PostgreSQL
// binaries (initdb and pg_ctl) on a free loopback port, for tests and for the development
// cluster (cmd/devcluster). PostgreSQL refuses to run as root, so as root the cluster runs as
// the "postgres" user. A watchdog stops the cluster and removes its directory when the
// process that started it exits, however it exits.
package pgcluster

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq" // the postgres driver for the admin connection

	"github.com/matrix-org/dendrite/internal/freeport"
)

// Cluster is a running throwaway cluster.
type Cluster struct {
	// DSN reaches the cluster's "postgres" database as the superuser "postgres".
	DSN string

	dir, data, pgCtl string
	asUser           func(name string, args ...string) *exec.Cmd
	watchdog         *exec.Cmd
	watchdogPipe     *os.File
	started          bool

	stopOnce sync.Once
	stopErr  error
}

// Bin finds a PostgreSQL server program on PATH or in /usr/lib/postgresql/*/bin.
func Bin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name) // a bad pattern is impossible here
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return "", fmt.Errorf("%s not found: install PostgreSQL (apt-get install postgresql)", name)
}

// Start initialises and starts a cluster in a new temporary directory on a free loopback
// port, waiting until it accepts connections or ctx ends. Durability is off (fsync,
// full_page_writes, synchronous_commit): the cluster is for tests and development only.
func Start(ctx context.Context) (_ *Cluster, err error) {
	initdb, err := Bin("initdb")
	if err != nil {
		return nil, err
	}
	c := &Cluster{asUser: exec.Command}
	if c.pgCtl, err = Bin("pg_ctl"); err != nil {
		return nil, err
	}
	if c.dir, err = os.MkdirTemp("", "dendrite-pg"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Stop() // best effort: the start already failed
		}
	}()
	if err = os.Chmod(c.dir, 0o755); err != nil {
		return nil, err
	}
	c.data = filepath.Join(c.dir, "data")
	if os.Geteuid() == 0 {
		if err = c.runAsPostgres(); err != nil {
			return nil, err
		}
	}
	if out, err := c.asUser(initdb, "-D", c.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := freeport.Port()
	if err != nil {
		return nil, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=1000 -c shared_buffers=64MB", port, c.dir)
	if out, err := c.asUser(c.pgCtl, "-D", c.data, "-o", opts, "-l", filepath.Join(c.dir, "log"), "-w", "-t", "30", "start").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_ctl start: %v: %s", err, out)
	}
	c.started = true
	if err = c.startWatchdog(); err != nil {
		return nil, err
	}
	c.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return c, c.waitReady(ctx)
}

// runAsPostgres makes the cluster's programs run as the postgres user, owning the directory.
func (c *Cluster) runAsPostgres() error {
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		return errors.New("running as root needs the postgres user (apt-get install postgresql creates it)")
	}
	uid, _ := strconv.Atoi(pgUser.Uid) // user.Lookup returns numeric IDs on Linux
	gid, _ := strconv.Atoi(pgUser.Gid)
	if err = os.Chown(c.dir, uid, gid); err != nil {
		return err
	}
	c.asUser = func(name string, args ...string) *exec.Cmd {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return nil
}

// startWatchdog starts a shell that waits on a pipe from this process, then stops the
// cluster and removes its directory. The kernel closes the pipe when this process exits,
// even on SIGKILL; Stop closes it on purpose.
func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	script := fmt.Sprintf("cat >/dev/null; %s -D %s -m immediate stop >/dev/null 2>&1; rm -rf %s", c.pgCtl, c.data, c.dir)
	c.watchdog = c.asUser("sh", "-c", script)
	c.watchdog.Stdin = r
	err = c.watchdog.Start()
	_ = r.Close() // the watchdog holds its own copy of the read end
	if err != nil {
		_ = w.Close() // nothing watches it
		return err
	}
	c.watchdogPipe = w
	return nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		db, err := sql.Open("postgres", c.DSN)
		if err == nil {
			err = db.PingContext(ctx)
			_ = db.Close() // only the ping matters
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID is the server's (postmaster's) process ID, from its postmaster.pid; the backends
// serving connections are its children.
func (c *Cluster) PID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(first))
}

// CreateDatabase creates a new empty database with a random name and returns its DSN.
func (c *Cluster) CreateDatabase(ctx context.Context) (string, error) {
	return CreateDatabase(ctx, c.DSN)
}

// CreateDatabase creates a new empty database with a random name on the server that admin
// (a DSN of an existing database) reaches, and returns the new database's DSN.
func CreateDatabase(ctx context.Context, admin string) (string, error) {
	db, err := sql.Open("postgres", admin)
	if err != nil {
		return "", err
	}
	defer db.Close() // nolint: errcheck // the admin connection only creates the database
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	name := "dendrite_" + hex.EncodeToString(b)
	if _, err = db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	return ReplaceDBName(admin, name), nil
}

// ReplaceDBName is dsn (a postgres:// URL) naming database name instead.
func ReplaceDBName(dsn, name string) string {
	i := strings.LastIndex(dsn, "/")
	rest := ""
	if q := strings.IndexByte(dsn[i:], '?'); q >= 0 {
		rest = dsn[i+q:]
	}
	return dsn[:i+1] + name + rest
}

// Stop stops the cluster (fast shutdown) and removes its directory. It is safe to call
// more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.started {
			if out, err := c.asUser(c.pgCtl, "-D", c.data, "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
				c.stopErr = fmt.Errorf("pg_ctl stop: %v: %s", err, out)
			}
		}
		if c.watchdogPipe != nil {
			_ = c.watchdogPipe.Close() // wakes the watchdog, which removes the directory
			_ = c.watchdog.Wait()      // its exit status says nothing about the cluster
		}
		if err := os.RemoveAll(c.dir); err != nil && c.stopErr == nil {
			c.stopErr = err
		}
	})
	return c.stopErr
}
