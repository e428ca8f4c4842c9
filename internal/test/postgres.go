// Package test holds helpers for tests: a throwaway PostgreSQL cluster and a runner that
// executes a storage test once per database engine.
package test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq" // the postgres driver for the admin connection

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// EnvPostgresDSN names a PostgreSQL server to use instead of starting one. Each test gets a
// new database on it.
const EnvPostgresDSN = "DENDRITE_TEST_POSTGRES_DSN"

var (
	clusterOnce sync.Once
	clusterDSN  string
	clusterErr  error
	// watchdog keeps the pipe whose closing (when this process exits, however it exits)
	// stops the cluster.
	watchdog *os.File
)

// WithAllDatabases runs fn as the subtests "sqlite" and "postgres", each on a fresh, empty
// database.
func WithAllDatabases(t *testing.T, fn func(t *testing.T, db *sqlutil.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "test.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
		fn(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		db, err := sqlutil.Open(PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
		fn(t, db)
	})
}

// PostgresDSN creates a new empty database and returns its DSN.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgresDSN)
	if base == "" {
		clusterOnce.Do(func() { clusterDSN, clusterErr = startCluster() })
		if clusterErr != nil {
			t.Fatalf("start throwaway PostgreSQL: %v", clusterErr)
		}
		base = clusterDSN
	}
	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close() // nolint: errcheck // the admin connection only creates the database
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	name := "test_" + hex.EncodeToString(b)
	if _, err = admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	return replaceDBName(base, name)
}

func replaceDBName(dsn, name string) string {
	i := strings.LastIndex(dsn, "/")
	rest := ""
	if q := strings.IndexByte(dsn[i:], '?'); q >= 0 {
		rest = dsn[i+q:]
	}
	return dsn[:i+1] + name + rest
}

// pgBin finds a PostgreSQL server program.
func pgBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name) // a bad pattern is impossible here
	if len(matches) > 0 {
		return matches[len(matches)-1], nil
	}
	return "", fmt.Errorf("%s not found: install PostgreSQL (apt-get install postgresql) or set %s", name, EnvPostgresDSN)
}

// startCluster initialises and starts a cluster in a temporary directory on a free
// loopback port. PostgreSQL refuses to run as root, so as root it runs as the "postgres"
// user. A watchdog shell waits on a pipe from this process and stops the cluster when the
// pipe closes, which the kernel does when this process exits for any reason.
func startCluster() (string, error) {
	initdb, err := pgBin("initdb")
	if err != nil {
		return "", err
	}
	pgCtl, err := pgBin("pg_ctl")
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "dendrite-pg")
	if err != nil {
		return "", err
	}
	if err = os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	data := filepath.Join(dir, "data")
	asUser := func(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
	if os.Geteuid() == 0 {
		pgUser, err := user.Lookup("postgres")
		if err != nil {
			return "", errors.New("running as root needs the postgres user (apt-get install postgresql creates it)")
		}
		uid, _ := strconv.Atoi(pgUser.Uid) // user.Lookup returns numeric IDs on Linux
		gid, _ := strconv.Atoi(pgUser.Gid)
		if err = os.Chown(dir, uid, gid); err != nil {
			return "", err
		}
		asUser = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
		}
	}
	if out, err := asUser(initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=400 -c shared_buffers=64MB", port, dir)
	if out, err := asUser(pgCtl, "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "30", "start").CombinedOutput(); err != nil {
		return "", fmt.Errorf("pg_ctl start: %v: %s", err, out)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	stop := asUser("sh", "-c", fmt.Sprintf("cat >/dev/null; %s -D %s -m immediate stop >/dev/null 2>&1", pgCtl, data))
	stop.Stdin = r
	if err = stop.Start(); err != nil {
		return "", err
	}
	_ = r.Close() // the watchdog holds its own copy of the read end
	watchdog = w
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		db, err := sql.Open("postgres", dsn)
		if err == nil {
			err = db.PingContext(ctx)
			_ = db.Close() // only the ping matters
		}
		if err == nil {
			return dsn, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("postgres did not accept connections: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close() // nolint: errcheck // the port is free again either way
	return l.Addr().(*net.TCPAddr).Port, nil
}
