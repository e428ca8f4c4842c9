package sqlutil_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// These tests are PostgreSQL's only: they are about lib/pq's handling of cancellation
// (pqconn.go). SQLite interrupts a cancelled statement in-process, which costs nothing.

// TestCancelledStatementRunsToItsEnd cancels the context of a statement waiting for a lock:
// the statement is not aborted (no cancel request), it completes once the lock is free, and
// the next statement runs on the same server connection.
func TestCancelledStatementRunsToItsEnd(t *testing.T) {
	dsn := test.PostgresDSN(t)
	db := openPostgres(t, dsn)
	db.SetMaxOpenConns(1)
	holder := openPostgres(t, dsn)
	bg := context.Background()
	var pid int64
	if err := db.QueryRowContext(bg, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	lock, err := holder.Conn(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close() // nolint: errcheck // releases the session's advisory lock too
	if _, err = lock.ExecContext(bg, "SELECT pg_advisory_lock(42)"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() {
		_, err := db.ExecContext(ctx, "SELECT pg_advisory_xact_lock(42)")
		done <- err
	}()
	waitFor(t, func() bool {
		var waiting bool
		err := holder.QueryRowContext(bg, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')", pid).Scan(&waiting)
		return err == nil && waiting
	})
	cancel()
	// The lock stays held while a cancel request would reach the server and abort the
	// statement (lib/pq sends one at once); a statement that ends meanwhile was aborted. On
	// a slow machine a late cancel request could miss this window, so the test could pass
	// without the fix there; it never fails with it.
	select {
	case err := <-done:
		t.Fatalf("the statement ended while the lock was held: %v", err)
	case <-time.After(3 * time.Second):
	}
	if _, err = lock.ExecContext(bg, "SELECT pg_advisory_unlock(42)"); err != nil {
		t.Fatal(err)
	}
	if err = <-done; err != nil {
		t.Fatalf("the statement whose context was cancelled failed: %v", err)
	}
	var after int64
	if err = db.QueryRowContext(bg, "SELECT pg_backend_pid()").Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != pid {
		t.Fatalf("the connection was replaced (backend %d, then %d)", pid, after)
	}
}

// TestConnectGivesUpWhenContextEnds opens a connection through a proxy that holds the
// server's answers back: the connection's startup waits, and ends with the caller's
// context instead of waiting for the server.
func TestConnectGivesUpWhenContextEnds(t *testing.T) {
	dsn := test.PostgresDSN(t)
	p := newHoldingProxy(t, dsn)
	db, err := sqlutil.OpenPostgresUnchecked(p.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // test cleanup
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- db.PingContext(ctx) }()
	<-p.accepted // the startup is under way and gets no answer
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ping ended with %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("opening a connection went on after its context ended")
	}
	p.release()
	if err := db.PingContext(context.Background()); err != nil {
		t.Fatalf("ping once the server answers: %v", err)
	}
}

func openPostgres(t *testing.T, dsn string) *sqlutil.DB {
	t.Helper()
	db, err := sqlutil.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
	return db
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holdingProxy forwards connections to a PostgreSQL server, holding the server's bytes
// back until release.
type holdingProxy struct {
	dsn      string
	accepted chan struct{}
	released chan struct{}
	once     sync.Once
}

func newHoldingProxy(t *testing.T, dsn string) *holdingProxy {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() }) // ends the accept loop
	server := u.Host
	u.Host = l.Addr().String()
	p := &holdingProxy{dsn: u.String(), accepted: make(chan struct{}, 1), released: make(chan struct{})}
	t.Cleanup(p.release)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case p.accepted <- struct{}{}:
			default:
			}
			go p.forward(c, server)
		}
	}()
	return p
}

func (p *holdingProxy) release() {
	p.once.Do(func() { close(p.released) })
}

func (p *holdingProxy) forward(c net.Conn, server string) {
	defer c.Close() // nolint: errcheck // proxy teardown
	s, err := net.Dial("tcp", server)
	if err != nil {
		return
	}
	defer s.Close() // nolint: errcheck // proxy teardown
	go func() {
		_, _ = io.Copy(s, c) // ends when either side closes
		_ = s.Close()        // wakes the copy below
	}()
	<-p.released
	_, _ = io.Copy(c, s) // ends when either side closes
}
