package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithLogRecordsDeleted kills the monolith with SIGKILL while five members send 300
// messages to a room (retrying each with its transaction ID until acknowledged), deletes
// every record and partition end of its embedded log (eventlog.db), and starts it again on
// the same address. Every consumer's offset is now past the end of a new log: the guards
// reset them, the sync API first catching up from the roomserver's outbox; inputs lost
// with the log were never acknowledged and are applied on retry.
// With no manual step every member then sees every acknowledged message exactly once, with
// the event ID its sender got, all in one order, each sender's in the order sent; the test logs how long the server took to
// answer sends again after the deletion. The search index is held back (its database
// locked) from the first send to the kill, so its log offset is far behind when the log is
// wiped: /search must still find every acknowledged message, recovered from the outbox.
func TestMonolithLogRecordsDeleted(t *testing.T) {
	dataDir := t.TempDir()
	s := startServer(t, e2e.WriteConfig(t, dataDir))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const senders, perSender = 5, 60
	var members []*mautrix.Client
	for i := range senders {
		members = append(members, e2e.Register(t, s.URL(), fmt.Sprintf("wiper%d", i)))
	}
	created, err := members[0].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	filter := &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1000}}}
	filterIDs, since := make([]string, senders), make([]string, senders)
	for i, m := range members {
		if i > 0 {
			if _, err := m.JoinRoomByID(ctx, roomID); err != nil {
				t.Fatal(err)
			}
		}
		f, err := m.CreateFilter(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		res, err := m.SyncRequest(ctx, 0, "", f.FilterID, false, "")
		if err != nil {
			t.Fatal(err)
		}
		filterIDs[i], since[i] = f.FilterID, res.NextBatch
	}

	// The search index falls behind: its database stays locked until the kill, so every
	// message sent until then reaches the searchapi only from the roomserver's outbox.
	searchDB, err := sqlutil.Open("file:" + filepath.Join(dataDir, "searchapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := searchDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}

	var acked atomic.Int32
	sent := make([][]id.EventID, senders)
	errs := make([]error, senders)
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perSender {
				eventID, _, err := e2e.SendRetrying(ctx, m, roomID, fmt.Sprintf("wiper%d-%03d", i, n))
				if err != nil {
					errs[i] = err
					return
				}
				sent[i] = append(sent[i], eventID)
				acked.Add(1)
			}
		}()
	}
	for acked.Load() < 60 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	deleted := time.Now()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait() // killed: the exit status says so
	if _, err := lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(lock.Close(), searchDB.Close()); err != nil {
		t.Fatal(err)
	}
	logDB, err := sqlutil.Open("file:" + filepath.Join(dataDir, "eventlog.db"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := logDB.ExecContext(ctx, "DELETE FROM eventlog_records")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := res.RowsAffected() // SQLite reports the count
	if _, err := logDB.ExecContext(ctx, "DELETE FROM eventlog_ends"); err != nil {
		t.Fatal(err)
	}
	if err := logDB.Close(); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	atDelete := acked.Load()
	for acked.Load() < atDelete+20 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("killed, %d log records deleted and started again after %d acknowledged sends; 20 more acknowledged %v after the kill", n, atDelete, time.Since(deleted).Round(time.Millisecond))
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("wiper%d: %v", i, err)
		}
	}
	var reference []id.EventID
	for i, m := range members {
		msgs := e2e.TimelineOf(t, m, filterIDs[i], since[i], roomID, senders*perSender)
		var order []id.EventID
		seen := map[id.EventID]bool{}
		for _, e := range msgs {
			if seen[e.ID] {
				t.Fatalf("wiper%d sees %s twice", i, e.ID)
			}
			seen[e.ID] = true
			order = append(order, e.ID)
		}
		pos := map[id.EventID]int{}
		for p, eventID := range order {
			pos[eventID] = p
		}
		for j, ids := range sent {
			for k, eventID := range ids {
				if !seen[eventID] {
					t.Fatalf("wiper%d does not see wiper%d-%03d (%s)", i, j, k, eventID)
				}
				if k > 0 && pos[eventID] < pos[ids[k-1]] {
					t.Fatalf("wiper%d sees wiper%d's messages out of order", i, j)
				}
			}
		}
		if len(order) != senders*perSender {
			t.Fatalf("wiper%d sees %d messages, %d were acknowledged", i, len(order), senders*perSender)
		}
		if reference == nil {
			reference = order
		} else if !slices.Equal(order, reference) {
			t.Fatalf("wiper0 and wiper%d see the messages in different orders", i)
		}
	}
	t.Logf("every member saw every acknowledged message %v after the kill", time.Since(deleted).Round(time.Millisecond))
	// The search index, a reader of the same output, recovered from the roomserver too.
	for i := range senders {
		term := fmt.Sprintf("wiper%d", i)
		for n := e2e.SearchCount(t, members[0], term); n != perSender; n = e2e.SearchCount(t, members[0], term) {
			if n > perSender || ctx.Err() != nil {
				t.Fatalf("/search finds %d messages of wiper%d, %d were acknowledged", n, i, perSender)
			}
			time.Sleep(50 * time.Millisecond) // polling with the test's deadline
		}
	}
	t.Logf("/search finds every acknowledged message %v after the kill", time.Since(deleted).Round(time.Millisecond))
}
