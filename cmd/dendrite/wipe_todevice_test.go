package main

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithToDeviceAcknowledgedOnlyWhenTaken: PUT /sendToDevice answers 200 only once the
// eduserver has taken the request (its transaction ID and messages committed to its
// outbox), so losing the log right after a 200 loses nothing. The eduserver's database is
// held locked while alice sends: the request reaches the log but cannot be taken, so it must
// not be acknowledged; the monolith is killed, its log deleted, and it starts again. Alice
// retries with the same transaction ID until acknowledged (the record she produced first
// went with the log), then retries once more as a client that missed the 200 would: bob
// receives the message exactly once (a marker sent after it shows nothing else comes).
func TestMonolithToDeviceAcknowledgedOnlyWhenTaken(t *testing.T) {
	dataDir := t.TempDir()
	s := startServer(t, e2e.WriteConfig(t, dataDir))
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	alice, bob := e2e.Register(t, s.URL(), "takentodevice"), e2e.Register(t, s.URL(), "takentodevicebob")
	send := func(ctx context.Context, txnID, body string) (int, string, error) {
		return putToDevice(ctx, s.URL(), alice.AccessToken, txnID, map[string]any{
			"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]string{"body": body}}}})
	}
	p := &e2e.Poller{C: bob}
	seen := map[string]int{}
	received := func(body string) func(*mautrix.RespSync) bool {
		return func(res *mautrix.RespSync) bool {
			for _, ev := range res.ToDevice.Events {
				if b, _ := ev.Content.Raw["body"].(string); ev.Sender == alice.UserID {
					seen[b]++
				}
			}
			return seen[body] > 0
		}
	}
	// A first message applied everywhere: the eduserver's and the sync API's offsets are
	// then past 0, so the deleted log is one they had read.
	if code, errcode, err := send(ctx, "first", "first"); code != http.StatusOK {
		t.Fatalf("first send: %d %s %v", code, errcode, err)
	}
	p.Until(t, 30*time.Second, "the first to-device message", received("first"))

	unlock := lockComponents(ctx, t, dataDir, "", "eduserver")
	type outcome struct {
		code int
		err  error
	}
	inFlight := make(chan outcome, 1)
	go func() {
		code, _, err := send(ctx, "second", "second")
		inFlight <- outcome{code, err}
	}()
	waitInputRecord(ctx, t, dataDir, `"txn_id":"second"`)
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait() // killed: the exit status says so
	if first := <-inFlight; first.code == http.StatusOK {
		t.Fatal("the send was acknowledged although the eduserver could not take it")
	}
	unlock()
	deleteLog(ctx, t, dataDir)
	s.start(t)

	retry(ctx, t, "the send lost with the log", func() (int, string, error) { return send(ctx, "second", "second") })
	if code, errcode, err := send(ctx, "second", "second"); code != http.StatusOK {
		t.Fatalf("a repeated transaction after the wipe: %d %s %v", code, errcode, err)
	}
	if code, errcode, err := send(ctx, "marker", "marker"); code != http.StatusOK {
		t.Fatalf("marker: %d %s %v", code, errcode, err)
	}
	p.Until(t, 60*time.Second, "the marker after the wipe", received("marker"))
	if seen["second"] != 1 {
		t.Fatalf("the acknowledged message arrived %d times, want once", seen["second"])
	}
}

// waitInputRecord polls the embedded log until an InputSendToDevice record holds want.
func waitInputRecord(ctx context.Context, t *testing.T, dataDir, want string) {
	t.Helper()
	db, err := sqlutil.Open("file:" + filepath.Join(dataDir, "eventlog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // read only
	for ctx.Err() == nil {
		var n int
		err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM eventlog_records WHERE topic LIKE '%InputSendToDevice'
			AND CAST(record_value AS TEXT) LIKE '%' || $1 || '%'`, want).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no InputSendToDevice record holds %s: %v", want, err)
}

// deleteLog deletes every record and partition end of the monolith's embedded log.
func deleteLog(ctx context.Context, t *testing.T, dataDir string) {
	t.Helper()
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
}
