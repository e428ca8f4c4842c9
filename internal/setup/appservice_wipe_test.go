package setup

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestAppServiceToDeviceSurvivesWipedLog: a to-device message for a device in a service's
// exclusive namespace, taken by the eduserver and produced, but not yet applied by the
// appservice component (its database held locked), reaches the service although the log
// is deleted before the component reads it: its to-device reader is Sequenced, and after
// the reset it fetches the record from the eduserver's outbox (QueryOutputRecords). A
// marker sent after the restart shows that the message arrives exactly once.
func TestAppServiceToDeviceSurvivesWipedLog(t *testing.T) {
	as := newFakeAppService(t, hsToken)
	broken := newFakeAppService(t, "down-hs")
	broken.setDown(true)
	cfg := appServiceConfig(t, "sqlite", as.srv.URL, broken.srv.URL)
	dataDir := cfg.Global.DataDir
	url, stop := stoppableMonolith(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	alice := e2e.Register(t, url, "alice")
	send := func(n int) {
		t.Helper()
		_, err := alice.SendToDevice(ctx, event.NewEventType("org.example.ping"), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{"@bridge_alice:as.test": {"BRIDGEDEV": {Raw: map[string]any{"n": n}}}}})
		if err != nil {
			t.Fatalf("send to-device %d: %v", n, err)
		}
	}
	msg := "org.example.ping @bridge_alice:as.test BRIDGEDEV " + alice.UserID.String()
	received := func(n int) {
		t.Helper()
		for ctx.Err() == nil {
			as.mu.Lock()
			got := len(as.toDevice)
			as.mu.Unlock()
			if got >= n {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("the service never received %d to-device messages", n)
	}
	// A first message the component applies: its offset is then past 0, so the deleted
	// log is one it had read.
	send(1)
	received(1)
	// The guard of a partition that was empty when its consumer started stores the log's
	// incarnation on its next check (every second), not with the offset; until then a wiped
	// log that grows back to the stored offset looks like the same log. This test is about
	// the to-device reader's recovery, so it waits for the incarnation.
	waitIncarnation(ctx, t, dataDir)

	asDB, err := sqlutil.Open("file:" + filepath.Join(dataDir, "appservice.db"))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := asDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	send(2)
	// Produced and marked so: the restarted eduserver does not produce it again, and only
	// the eduserver's outbox still holds it once the log is deleted.
	waitProduced(ctx, t, dataDir, 2)
	stop()
	if _, err = lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err = errors.Join(lock.Close(), asDB.Close()); err != nil {
		t.Fatal(err)
	}
	logDB, err := sqlutil.Open("file:" + filepath.Join(dataDir, "eventlog.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DELETE FROM eventlog_records", "DELETE FROM eventlog_ends"} {
		if _, err = logDB.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err = logDB.Close(); err != nil {
		t.Fatal(err)
	}

	url, _ = stoppableMonolith(t, cfg)
	alice.HomeserverURL = e2e.MustParse(t, url)
	send(3)
	received(3)
	as.mu.Lock()
	got := slices.Clone(as.toDevice)
	as.mu.Unlock()
	if want := []string{msg, msg, msg}; !slices.Equal(got, want) {
		t.Fatalf("the service received the to-device messages %v, want %v", got, want)
	}
}

// waitProduced polls the eduserver's database until n of its outbox records are produced.
func waitProduced(ctx context.Context, t *testing.T, dataDir string, n int) {
	t.Helper()
	db, err := sqlutil.Open("file:" + filepath.Join(dataDir, "eduserver.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // read only
	for ctx.Err() == nil {
		var count int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM eduserver_outbox WHERE produced").Scan(&count); err == nil && count >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the eduserver never produced %d to-device messages: %v", n, err)
}

// waitIncarnation polls the appservice component's database until its to-device consumer
// stored an offset past 0 with the log's incarnation.
func waitIncarnation(ctx context.Context, t *testing.T, dataDir string) {
	t.Helper()
	db, err := sqlutil.Open("file:" + filepath.Join(dataDir, "appservice.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // read only
	for ctx.Err() == nil {
		var count int
		if err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM appservice_log_offsets WHERE topic LIKE '%OutputSendToDeviceEvent'
			AND next_offset > 0 AND incarnation <> ''`).Scan(&count); err == nil && count > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the to-device consumer never stored its offset with the log's incarnation: %v", err)
}
