package main

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithPresenceSurvivesWipedLog: a presence change the presenceserver announced
// (stored in its outbox with the user's presence, and produced), which the sync API had not
// applied yet (its database held locked), survives the loss of the log: after the kill,
// the deletion of every record of the embedded log and the restart, the sync API's guard
// catches up from the presenceserver's QueryOutputRecords, and a room-mate's /sync shows
// the status set before the wipe. Both engines.
func TestMonolithPresenceSurvivesWipedLog(t *testing.T) {
	onEachEngine(t, func(t *testing.T, newDSN func() string) {
		dsn := newDSN()
		presenceSurvivesWipedLog(t, startFedServerWith(t, dsn, ""), dsn)
	})
}

func presenceSurvivesWipedLog(t *testing.T, s *fedServer, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	const wait = 90 * time.Second
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the restarted server's log:\n%s", s.logs)
		}
	})
	users, _ := e2e.UsersInRoom(t, s.URL(), "wipedpresence", 2)
	alice, bob := users[0], users[1]
	p := &e2e.Poller{C: bob}
	status := func(msg string) func(*mautrix.RespSync) bool {
		return func(res *mautrix.RespSync) bool {
			for _, ev := range res.Presence.Events {
				if ev.Sender == alice.UserID && ev.Content.Raw["status_msg"] == msg {
					return true
				}
			}
			return false
		}
	}
	set := func(msg string) {
		t.Helper()
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: msg}); err != nil {
			t.Fatal(err)
		}
	}
	// A first change the sync API applies: its offset in alice's partition is then past 0,
	// so the deleted log is one it had read.
	set("before")
	p.Until(t, wait, "alice's first status", status("before"))

	unlock := lockReaders(ctx, t, s.dataDir, dsn)
	set("during")
	// Produced and marked so: the restarted presenceserver does not produce it again, and
	// only its outbox still holds it once the log is deleted.
	waitProduced(ctx, t, s.dataDir, dsn, "presenceserver", alice.UserID.String(), `"during"`)
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait() // killed: the exit status says so
	unlock()
	deleteLog(ctx, t, s.dataDir)
	s.start(t)

	p.Until(t, wait, "alice's status set before the wipe", status("during"))
}
