package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithAccountDataSurvivesWipedLog: account data acknowledged (200) and produced,
// but not yet applied by the sync API (its database held locked), survives the loss of the
// log. The monolith is killed, every record and partition end of its embedded log deleted,
// and it starts again: the sync API's guard finds its offset past the new log's end and
// catches up from the userapi's outbox (QueryOutputRecords), so /sync shows the data.
func TestMonolithAccountDataSurvivesWipedLog(t *testing.T) {
	dataDir := t.TempDir()
	s := startServer(t, e2e.WriteConfig(t, dataDir))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	alice := e2e.Register(t, s.URL(), "wipeddata")
	// A first change the sync API applies: its offset in alice's partition is then past 0,
	// so the deleted log is one it had read.
	if err := alice.SetAccountData(ctx, "org.example.first", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	waitAccountData(ctx, t, alice, "org.example.first")

	syncDB, err := sqlutil.Open("file:" + filepath.Join(dataDir, "syncapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := syncDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAccountData(ctx, "org.example.second", map[string]int{"n": 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait() // killed: the exit status says so
	if _, err := lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(lock.Close(), syncDB.Close()); err != nil {
		t.Fatal(err)
	}
	logDB, err := sqlutil.Open("file:" + filepath.Join(dataDir, "eventlog.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DELETE FROM eventlog_records", "DELETE FROM eventlog_ends"} {
		if _, err := logDB.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := logDB.Close(); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	waitAccountData(ctx, t, alice, "org.example.second")
}

// waitAccountData polls an initial /sync until it holds the global account data dataType.
func waitAccountData(ctx context.Context, t *testing.T, c *mautrix.Client, dataType string) {
	t.Helper()
	for ctx.Err() == nil {
		res, err := c.SyncRequest(ctx, 0, "", "", false, "")
		if err == nil {
			for _, ev := range res.AccountData.Events {
				if ev.Type.Type == dataType {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("/sync never showed account data %s", dataType)
}
