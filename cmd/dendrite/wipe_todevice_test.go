package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
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
	send := func(ctx context.Context, txnID, body string) (int, error) {
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
	if code, err := send(ctx, "first", "first"); code != http.StatusOK {
		t.Fatalf("first send: %d %v", code, err)
	}
	p.Until(t, 30*time.Second, "the first to-device message", received("first"))

	eduDB, err := sqlutil.Open("file:" + filepath.Join(dataDir, "eduserver.db"))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := eduDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		code int
		err  error
	}
	inFlight := make(chan outcome, 1)
	go func() {
		code, err := send(ctx, "second", "second")
		inFlight <- outcome{code, err}
	}()
	waitInputRecord(ctx, t, dataDir, `"txn_id":"second"`)
	if err = s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait() // killed: the exit status says so
	if first := <-inFlight; first.code == http.StatusOK {
		t.Fatal("the send was acknowledged although the eduserver could not take it")
	}
	if _, err = lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err = errors.Join(lock.Close(), eduDB.Close()); err != nil {
		t.Fatal(err)
	}
	deleteLog(ctx, t, dataDir)
	s.start(t)

	for code := 0; code != http.StatusOK; {
		if ctx.Err() != nil {
			t.Fatalf("the retried send was never acknowledged: %d %v", code, err)
		}
		if code, err = send(ctx, "second", "second"); code != http.StatusOK {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if code, err := send(ctx, "second", "second"); code != http.StatusOK {
		t.Fatalf("a repeated transaction after the wipe: %d %v", code, err)
	}
	if code, err := send(ctx, "marker", "marker"); code != http.StatusOK {
		t.Fatalf("marker: %d %v", code, err)
	}
	p.Until(t, 60*time.Second, "the marker after the wipe", received("marker"))
	if seen["second"] != 1 {
		t.Fatalf("the acknowledged message arrived %d times, want once", seen["second"])
	}
}

// putToDevice sends one PUT /sendToDevice request with plain HTTP (no client retries) and
// returns its status.
func putToDevice(ctx context.Context, baseURL, token, txnID string, body any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut,
		fmt.Sprintf("%s/_matrix/client/v3/sendToDevice/org.example.taken/%s", baseURL, txnID), bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close() // nolint: errcheck // only the status matters
	return resp.StatusCode, nil
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

// TestMonolithToDeviceInputWaitTimeout: edu_server.input_wait_timeout bounds how long PUT
// /sendToDevice waits for the eduserver. Set to 1s, with the eduserver's database held
// locked, the send answers 504 M_UNKNOWN well before the 30 s default would have; once the
// lock is gone the client's retry with the same transaction ID is acknowledged.
func TestMonolithToDeviceInputWaitTimeout(t *testing.T) {
	dataDir := t.TempDir()
	cfg := e2e.WriteConfig(t, dataDir)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = f.WriteString("edu_server:\n  input_wait_timeout: 1s\n"); err != nil {
		t.Fatal(err)
	}
	if err = f.Close(); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	alice, bob := e2e.Register(t, s.URL(), "waittodevice"), e2e.Register(t, s.URL(), "waittodevicebob")
	body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]string{"body": "x"}}}}

	eduDB, err := sqlutil.Open("file:" + filepath.Join(dataDir, "eduserver.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer eduDB.Close() // nolint: errcheck // the test's own handle
	lock, err := eduDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, err := putToDevice(ctx, s.URL(), alice.AccessToken, "waited", body)
	if took := time.Since(start); code != http.StatusGatewayTimeout || took > 20*time.Second {
		t.Fatalf("send with the eduserver locked: %d %v after %s, want 504 within the configured 1s (and well before the 30s default)", code, err, took)
	}
	if _, err = lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err = lock.Close(); err != nil {
		t.Fatal(err)
	}
	for {
		code, err = putToDevice(ctx, s.URL(), alice.AccessToken, "waited", body)
		if code == http.StatusOK {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("retry after the lock: %d %v", code, err)
		}
		time.Sleep(50 * time.Millisecond) // polling with the test's deadline
	}
}
