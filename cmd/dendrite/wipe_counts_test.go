package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithNotificationCountsSurviveWipedLog: unread counts the pushserver announced
// (stored in its outbox with the notification, and produced), which the sync API had not
// applied yet (its database held locked), survive the loss of the log. The monolith is
// killed, every record of its embedded log deleted, and it starts again: the sync API's
// guard catches up from the pushserver's QueryOutputRecords, so bob's /sync shows the
// count the message raised (the pushserver, having evaluated the message before the wipe,
// never counts it again). A later message raises it by exactly one. Both engines.
func TestMonolithNotificationCountsSurviveWipedLog(t *testing.T) {
	onEachEngine(t, func(t *testing.T, newDSN func() string) {
		dsn := newDSN()
		countsSurviveWipedLog(t, startFedServerWith(t, dsn, ""), dsn)
	})
}

func countsSurviveWipedLog(t *testing.T, s *fedServer, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	const wait = 90 * time.Second
	alice, bob := e2e.Register(t, s.URL(), "wipedcounts"), e2e.Register(t, s.URL(), "wipedcountsbob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	p := &e2e.Poller{C: bob}
	count := -1
	counted := func(n int) func(*mautrix.RespSync) bool {
		return func(res *mautrix.RespSync) bool {
			if r := res.Rooms.Join[room.RoomID]; r != nil && r.UnreadNotifications != nil {
				count = r.UnreadNotifications.NotificationCount
			}
			return count == n
		}
	}
	send := func(n int) {
		t.Helper()
		if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("message %d", n)); err != nil {
			t.Fatal(err)
		}
	}
	// A first count the sync API applies: its offset in bob's partition is then past 0, so
	// the deleted log is one it had read.
	send(1)
	p.Until(t, wait, "bob's first unread notification", counted(1))

	unlock := lockReaders(ctx, t, s.dataDir, dsn)
	send(2)
	// Produced and marked so: the restarted pushserver does not produce it again, and only
	// its outbox still holds it once the log is deleted.
	waitProduced(ctx, t, s.dataDir, dsn, "pushserver", bob.UserID.String(), `"notification_count":2`)
	if err = s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait() // killed: the exit status says so
	unlock()
	deleteLog(ctx, t, s.dataDir)
	s.start(t)

	p.Until(t, wait, "bob's second unread notification after the wipe", counted(2))
	send(3)
	p.Until(t, wait, "bob's third unread notification", counted(3))
}
