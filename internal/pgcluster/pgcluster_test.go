package pgcluster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStartStop starts a cluster, uses a new database on it, and stops it: the server is
// gone and so is its directory.
func TestStartStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop() // nolint: errcheck // the test stops it itself; this only covers failures
	dsn, err := c.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := c.PID()
	if err != nil {
		t.Fatal(err)
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || strings.TrimSpace(string(comm)) != "postgres" {
		t.Fatalf("pid %d is not the server: %q, %v", pid, comm, err)
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = db.ExecContext(ctx, "CREATE TABLE t (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	_ = db.Close() // only the statement mattered
	if err = c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err = os.Stat(c.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cluster directory still there: %v", err)
	}
	db, _ = sql.Open("postgres", c.DSN) // sql.Open only parses
	defer db.Close()                    // nolint: errcheck // never connected
	if err = db.PingContext(ctx); err == nil {
		t.Fatal("cluster still answers after Stop")
	}
}

func TestReplaceDBName(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u@h:1/postgres?sslmode=disable": "postgres://u@h:1/x?sslmode=disable",
		"postgres://u@h:1/postgres":                 "postgres://u@h:1/x",
	} {
		if got := ReplaceDBName(in, "x"); got != want {
			t.Errorf("ReplaceDBName(%q) = %q, want %q", in, got, want)
		}
	}
}
