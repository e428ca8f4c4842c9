package eduserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/eduserver"
	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/userapi"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

func start(t *testing.T, db *sqlutil.DB) (context.Context, *test.Follow, *test.Follow, *api.Producer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := test.EmbeddedLog(t, 4)
	topics := eduserver.TopicsWithPrefix("T")
	typing, toDevice := test.FollowTopic(t, log, topics.OutputTyping), test.FollowTopic(t, log, topics.OutputSendToDevice)
	udb, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "userapi.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = udb.Close() }) // nothing to do about a failed close in cleanup
	users, err := userapi.New(ctx, userapi.Deps{Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: "x", DB: udb})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = users.API().PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: "b", Password: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"D1", "D2"} {
		if _, err = users.API().PerformDeviceCreation(ctx, &uapi.PerformDeviceCreationRequest{Localpart: "b", DeviceID: &id}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := eduserver.New(ctx, eduserver.Deps{Cfg: &config.EDUServer{MaxTypingTimeout: config.Duration(time.Minute)}, ServerName: "x",
		DB: db, Log: log, Topics: topics, Devices: users.API(), Logger: logrus.NewEntry(logrus.New())})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Run(ctx) }() // ends with ctx
	in := &api.Producer{Log: log, TypingTopic: topics.InputTyping, ToDeviceTopic: topics.InputSendToDevice}
	// The typing consumer starts from the topic's end: wait until it is there.
	deadline := time.Now().Add(5 * time.Second)
	for {
		must(t, in.InputTyping(ctx, &api.InputTypingEvent{RoomID: "!warm:x", UserID: "@w:x", Typing: false, OriginTS: time.Now().UnixMilli()}))
		if len(typing.Wait(t, 0, time.Second)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the typing consumer never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ctx, typing, toDevice, in
}

// TestTypingExpires: a user typing is announced with the room's set, and removed again by
// the timeout alone.
func TestTypingExpires(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, typing, _, in := start(t, db)
		// Long enough to be applied before it expires on a loaded machine (one applied later
		// ends the typing at once: TestTypingExpiredInputEndsTyping).
		must(t, in.InputTyping(ctx, &api.InputTypingEvent{RoomID: "!r:x", UserID: "@a:x", Typing: true, TimeoutMS: 3000, OriginTS: time.Now().UnixMilli()}))
		var sets [][]api.TypingUser
		for deadline := time.Now().Add(time.Minute); len(sets) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			sets = nil
			for _, rec := range typing.Wait(t, 0, time.Second) {
				var o api.OutputTypingEvent
				must(t, json.Unmarshal(rec.Value, &o))
				if o.RoomID == "!r:x" {
					sets = append(sets, o.Users)
				}
			}
		}
		if len(sets) != 2 || len(sets[0]) != 1 || sets[0][0].UserID != "@a:x" || len(sets[1]) != 0 {
			t.Fatalf("typing sets %+v, want @a:x then nobody", sets)
		}
	})
}

// TestTypingExpiredInputEndsTyping: a typing input that has expired by the time the
// eduserver applies it (a loaded or lagging consumer) ends the user's typing, as its expiry
// would have, instead of leaving the user typing until an earlier, longer timeout.
func TestTypingExpiredInputEndsTyping(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, typing, _, in := start(t, db)
		now := time.Now()
		for _, e := range []api.InputTypingEvent{
			{RoomID: "!late:x", UserID: "@a:x", Typing: true, TimeoutMS: time.Minute.Milliseconds(), OriginTS: now.UnixMilli()},
			{RoomID: "!late:x", UserID: "@a:x", Typing: true, TimeoutMS: 1000, OriginTS: now.Add(-10 * time.Second).UnixMilli()},
			{RoomID: "!late:x", UserID: "@marker:x", Typing: true, TimeoutMS: time.Minute.Milliseconds(), OriginTS: now.UnixMilli()},
		} {
			must(t, in.InputTyping(ctx, &e))
		}
		setOf := func(rec eventlog.Record) []api.TypingUser {
			var o api.OutputTypingEvent
			must(t, json.Unmarshal(rec.Value, &o))
			if o.RoomID != "!late:x" {
				return nil
			}
			return o.Users
		}
		hasMarker := func(rec eventlog.Record) bool {
			for _, u := range setOf(rec) {
				if u.UserID == "@marker:x" {
					return true
				}
			}
			return false
		}
		recs := typing.Until(t, time.Minute, hasMarker)
		for _, rec := range recs {
			if hasMarker(rec) {
				if users := setOf(rec); len(users) != 1 {
					t.Fatalf("typing set %+v, want only @marker:x", users)
				}
				return
			}
		}
	})
}

// TestSendToDeviceOnceAndExpanded: a repeated transaction sends nothing again, and "*"
// reaches every device of a local user.
func TestSendToDeviceOnceAndExpanded(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, _, toDevice, in := start(t, db)
		req := &api.InputSendToDeviceEvent{Sender: "@a:x", SenderDevice: "A", TxnID: "t1", Type: "m.test",
			Messages: map[string]map[string]json.RawMessage{"@b:x": {"*": json.RawMessage(`{"n":1}`)}, "@c:remote": {"R": json.RawMessage(`{"n":2}`)}}}
		must(t, in.InputSendToDevice(ctx, req))
		must(t, in.InputSendToDevice(ctx, req))
		req.TxnID = "t2"
		req.Messages = map[string]map[string]json.RawMessage{"@b:x": {"D1": json.RawMessage(`{"n":3}`)}}
		must(t, in.InputSendToDevice(ctx, req))
		// A marker from the same sender, so on the same input partition: once its output is
		// there, the inputs before it were processed and any duplicate of theirs written.
		req.TxnID = "marker"
		req.Messages = map[string]map[string]json.RawMessage{"@c:remote": {"R": json.RawMessage(`"marker"`)}}
		must(t, in.InputSendToDevice(ctx, req))
		toDevice.Until(t, 5*time.Second, func(rec eventlog.Record) bool { return strings.Contains(string(rec.Value), `"marker"`) })
		var got []string
		ids := map[string]bool{}
		for _, rec := range toDevice.Settled(t, 5*time.Second) {
			var o api.OutputSendToDeviceEvent
			must(t, json.Unmarshal(rec.Value, &o))
			if string(o.Content) == `"marker"` {
				continue
			}
			got = append(got, o.UserID+"/"+o.DeviceID+"="+string(o.Content))
			ids[o.MessageID] = true
		}
		sort.Strings(got)
		want := []string{`@b:x/D1={"n":1}`, `@b:x/D1={"n":3}`, `@b:x/D2={"n":1}`, `@c:remote/R={"n":2}`}
		if len(got) != len(want) || len(ids) != len(want) {
			t.Fatalf("messages %v, want %v with distinct IDs", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("messages %v, want %v", got, want)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestTypingHugeTimeout: a timeout at the top of the int64 range is clamped to the maximum
// (one minute here), not wrapped around into a short or negative duration.
func TestTypingHugeTimeout(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, typing, _, in := start(t, db)
		origin := time.Now().UnixMilli()
		must(t, in.InputTyping(ctx, &api.InputTypingEvent{RoomID: "!huge:x", UserID: "@a:x", Typing: true, TimeoutMS: math.MaxInt64, OriginTS: origin}))
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			for _, rec := range typing.Wait(t, 0, time.Second) {
				var o api.OutputTypingEvent
				must(t, json.Unmarshal(rec.Value, &o))
				if o.RoomID != "!huge:x" {
					continue
				}
				if len(o.Users) != 1 || o.Users[0].ExpiresTS != origin+time.Minute.Milliseconds() {
					t.Fatalf("typing set %+v, want @a:x until %d", o.Users, origin+time.Minute.Milliseconds())
				}
				return
			}
		}
		t.Fatal("no typing set for the room")
	})
}

// TestOutputReplayWindow: the eduserver keeps produced OutputSendToDeviceEvent records for
// edu_server.output_replay_window; once they are older, asking for them is 404
// M_NOT_FOUND, which a reader's OutputSequence turns into eventlog.ReplayGoneError naming
// the number after the last record. The records are produced by an eduserver with the
// window unset (7 days), then served by one with a window of 1 ns.
func TestOutputReplayWindow(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		log := test.EmbeddedLog(t, 1)
		topics := eduserver.TopicsWithPrefix("W")
		start := func(window time.Duration) (api.ServerAPI, func()) {
			s, err := eduserver.New(ctx, eduserver.Deps{Cfg: &config.EDUServer{MaxTypingTimeout: config.Duration(time.Minute),
				OutputReplayWindow: config.Duration(window)}, ServerName: "x", DB: db, Log: log, Topics: topics, Logger: logrus.NewEntry(logrus.New())})
			if err != nil {
				t.Fatal(err)
			}
			run, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.Run(run) }()
			return s.API(), func() { stop(); must(t, <-done) }
		}
		first, stop := start(0)
		in := &api.Producer{Log: log, TypingTopic: topics.InputTyping, ToDeviceTopic: topics.InputSendToDevice, Wait: first}
		for _, txn := range []string{"t1", "t2"} {
			must(t, in.InputSendToDevice(ctx, &api.InputSendToDeviceEvent{Sender: "@a:x", SenderDevice: "A", TxnID: txn, Type: "m.test",
				Messages: map[string]map[string]json.RawMessage{"@c:remote": {"R": json.RawMessage(`{}`)}}}))
		}
		res, err := first.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{AfterSeq: 1})
		if err != nil || len(res.Records) != 1 || res.LastSeq != 2 {
			t.Fatalf("before pruning: %+v, %v", res, err)
		}
		// What the first eduserver had not produced yet, the second produces at its start,
		// and then prunes it with the rest.
		stop()
		pruned, stop := start(time.Nanosecond)
		defer stop()
		for {
			_, err = pruned.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{AfterSeq: 1})
			if err != nil || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		var merr *matrixerr.Error
		if !errors.As(err, &merr) || merr.Code != "M_NOT_FOUND" {
			t.Fatalf("past a window of 1 ns: %v", err)
		}
		_, err = api.OutputSequence(pruned).Fetch(ctx, 0, 1)
		var gone *eventlog.ReplayGoneError
		if !errors.As(err, &gone) || gone.Oldest != 3 {
			t.Fatalf("Fetch past the window: %v", err)
		}
	})
}
