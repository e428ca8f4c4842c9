package main

import (
	"context"
	"errors"
	"net/http"
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

	lostWithLog(ctx, t, s, dataDir, func() {
		if err := alice.SetAccountData(ctx, "org.example.second", map[string]int{"n": 2}); err != nil {
			t.Fatal(err)
		}
	})
	waitAccountData(ctx, t, alice, "org.example.second")
}

// TestMonolithKeyChangeSurvivesWipedLog: a key change of a local user (a new device)
// acknowledged (200) and produced, but not yet applied by the sync API, survives the loss
// of the log as account data does: the userapi stores it in its outbox with the device,
// and the sync API's guard catches up from QueryOutputRecords, so a room-mate still sees
// the user in /sync's device_lists.changed and in /keys/changes.
func TestMonolithKeyChangeSurvivesWipedLog(t *testing.T) {
	dataDir := t.TempDir()
	s := startServer(t, e2e.WriteConfig(t, dataDir))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	alice, bob := e2e.Register(t, s.URL(), "wipedkeys"), e2e.Register(t, s.URL(), "wipedkeysbob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	p := &e2e.Poller{C: bob}
	p.Drain(t, func(*mautrix.RespSync) {})
	// A first change the sync API applies: its offset in alice's partition is then past 0,
	// so the deleted log is one it had read.
	loginDevice(ctx, t, s.URL(), "wipedkeys")
	p.Until(t, 30*time.Second, "alice's first new device in device_lists.changed", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, alice.UserID)
	})
	before := p.Since
	lostWithLog(ctx, t, s, dataDir, func() { loginDevice(ctx, t, s.URL(), "wipedkeys") })
	p.Until(t, 60*time.Second, "alice's device after the wipe in device_lists.changed", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, alice.UserID)
	})
	var kc mautrix.RespKeyChanges
	u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "keys", "changes"}, map[string]string{"from": before, "to": p.Since})
	if _, err = bob.MakeRequest(ctx, http.MethodGet, u, nil, &kc); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kc.Changed, alice.UserID) {
		t.Fatalf("/keys/changes after the wipe: %+v", kc)
	}
}

// TestMonolithToDeviceSurvivesWipedLog: a to-device message the eduserver took (stored in
// its outbox with the request's transaction ID) but the sync API had not applied yet (its
// database held locked) survives the loss of the log: the sync API's guard catches up
// from the eduserver's QueryOutputRecords, so the recipient's /sync delivers it.
func TestMonolithToDeviceSurvivesWipedLog(t *testing.T) {
	dataDir := t.TempDir()
	s := startServer(t, e2e.WriteConfig(t, dataDir))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	alice, bob := e2e.Register(t, s.URL(), "wipedtodevice"), e2e.Register(t, s.URL(), "wipedtodevicebob")
	send := func(body string) {
		t.Helper()
		_, err := alice.SendToDevice(ctx, event.NewEventType("org.example.wiped"), &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			bob.UserID: {bob.DeviceID: {Raw: map[string]any{"body": body}}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	p := &e2e.Poller{C: bob}
	received := func(body string) func(*mautrix.RespSync) bool {
		return func(res *mautrix.RespSync) bool {
			for _, ev := range res.ToDevice.Events {
				if b, _ := ev.Content.Raw["body"].(string); b == body && ev.Sender == alice.UserID {
					return true
				}
			}
			return false
		}
	}
	// A first message the sync API applies: its offset in bob's partition is then past 0,
	// so the deleted log is one it had read.
	send("first")
	p.Until(t, 30*time.Second, "the first to-device message", received("first"))
	lostWithLog(ctx, t, s, dataDir, func() {
		send("second")
		waitOutbox(ctx, t, dataDir, 2)
	})
	p.Until(t, 60*time.Second, "the to-device message after the wipe", received("second"))
}

// waitOutbox polls the eduserver's database until its outbox holds n records.
func waitOutbox(ctx context.Context, t *testing.T, dataDir string, n int) {
	t.Helper()
	db, err := sqlutil.Open("file:" + filepath.Join(dataDir, "eduserver.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // read only
	for ctx.Err() == nil {
		var count int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM eduserver_outbox").Scan(&count); err == nil && count >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the eduserver never stored %d to-device messages: %v", n, err)
}

// loginDevice logs a new device of the account name (registered by e2e.Register) in.
func loginDevice(ctx context.Context, t *testing.T, baseURL, name string) {
	t.Helper()
	_, err := e2e.Client(t, baseURL).Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name}, Password: "password-" + name})
	if err != nil {
		t.Fatal(err)
	}
}

// lostWithLog runs acknowledged while the sync API cannot apply anything (its database
// held locked), so that what acknowledged produced is in the log only; then kills the
// monolith, deletes every record and partition end of its embedded log, and starts it
// again.
func lostWithLog(ctx context.Context, t *testing.T, s *server, dataDir string, acknowledged func()) {
	t.Helper()
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
	acknowledged()
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
	deleteLog(ctx, t, dataDir)
	s.start(t)
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
