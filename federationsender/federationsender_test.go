package federationsender_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// threeServers is A (the sender) with a room !r on A that @a (A), @b (B) and @c (C) joined.
type threeServers struct {
	a, b, c *server
	roomID  string
	joins   map[string]gomatrixserverlib.PDU
	rooms   *rooms
}

func newThreeServers(t *testing.T) *threeServers {
	ts := &threeServers{a: newServer(t), b: newServer(t), c: newServer(t), rooms: &rooms{}, joins: map[string]gomatrixserverlib.PDU{}}
	ts.roomID = "!r:" + string(ts.a.name)
	create := ts.a.event(t, ts.roomID, ts.a.user("a"), spec.MRoomCreate, new(string), map[string]string{"room_version": string(testRoomVersion)})
	state := []gomatrixserverlib.PDU{create}
	for i, s := range []*server{ts.a, ts.b, ts.c} {
		join := s.member(t, ts.roomID, s.user(string(rune('a'+i))), spec.Join)
		ts.joins[string(s.name)] = join
		state = append(state, join)
	}
	ts.rooms.set(ts.roomID, state...)
	return ts
}

// TestEventsReachEveryServerInOrder: 120 events of our user reach B and C, each in order,
// in transactions of at most 50 PDUs, every request signed (checked with the receivers' key
// rings, which fetch A's key from A). An event from B is not sent on. A kick of C's user
// reaches C, and later events do not.
func TestEventsReachEveryServerInOrder(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ts := newThreeServers(t)
		log := test.EmbeddedLog(t, 4)
		newSender(t, ts.a, db, log, ts.rooms, testSenderConfig())

		var sent []gomatrixserverlib.PDU
		for i := range 120 {
			sent = append(sent, ts.a.event(t, ts.roomID, ts.a.user("a"), "m.room.message", nil, map[string]any{"body": i}))
		}
		fromB := ts.b.event(t, ts.roomID, ts.b.user("b"), "m.room.message", nil, map[string]any{"body": "from B"})
		produceEvents(t, log, sent[:60]...)
		produceEvents(t, log, fromB)
		produceEvents(t, log, sent[60:]...)

		want := eventIDs(sent)
		for _, s := range []*server{ts.b, ts.c} {
			got := s.waitPDUs(len(want), eventually)
			if !slices.Equal(got, want) {
				t.Fatalf("%s got %d PDUs %v, want %d in order", s.name, len(got), got, len(want))
			}
			s.mu.Lock()
			sizes, bad := s.txnSizes, s.badAuth
			s.mu.Unlock()
			if bad != 0 || len(sizes) < 3 || slices.Max(sizes) > 50 {
				t.Fatalf("%s: transaction sizes %v (want at least 3, none over 50), %d unauthenticated", s.name, sizes, bad)
			}
		}

		// A's user kicks C's: C gets the kick, then no more events.
		cUser := ts.c.user("c")
		kick := ts.a.event(t, ts.roomID, ts.a.user("a"), spec.MRoomMember, &cUser, map[string]string{"membership": spec.Leave})
		after := ts.a.event(t, ts.roomID, ts.a.user("a"), "m.room.message", nil, map[string]any{"body": "after"})
		msgs := []*rsapi.OutputNewRoomEvent{
			{Event: rsapi.Event{PDU: kick}, AddsStateEventIDs: []string{kick.EventID()}, RemovesStateEventIDs: []string{ts.joins[string(ts.c.name)].EventID()}},
			{Event: rsapi.Event{PDU: after}},
		}
		for _, m := range msgs {
			if _, err := log.Produce(t.Context(), rsapi.TopicOutputRoomEvent, outputMessage(t, m)); err != nil {
				t.Fatal(err)
			}
		}
		gotB := ts.b.waitPDUs(len(want)+2, eventually)
		if !slices.Equal(gotB[len(want):], []string{kick.EventID(), after.EventID()}) {
			t.Fatalf("B got %v after the first batch", gotB[len(want):])
		}
		// B got "after", so it was queued for every destination it went to. A to-device
		// message for C queued now is sent with or after anything queued for C before it.
		produceJSON(t, log, eduapi.TopicOutputSendToDeviceEvent, cUser, eduapi.OutputSendToDeviceEvent{MessageID: "marker",
			Sender: ts.a.user("a"), Type: "m.test", UserID: cUser, DeviceID: "DEV", Content: json.RawMessage(`{}`)})
		ts.c.waitEDUs(eventually, func(edus []gomatrixserverlib.EDU) bool { return hasEDU(edus, "m.direct_to_device", `"marker"`) })
		gotC, _ := ts.c.received()
		if !slices.Equal(gotC[len(want):], []string{kick.EventID()}) {
			t.Fatalf("C got %v after the first batch, want only the kick", gotC[len(want):])
		}
	})
}

// TestThirdPartyInvitesMadeHere: a third-party invite is sent by the server that made it.
// One A made for B's user (an invitee of A, signed by A alone) reaches B and C, as does an
// invite A's user sent that B countersigned; one B made for A's user and sent here (signed
// by B alone, its sender a user of A) is not sent on. Before, the sender's server decided,
// so A sent B's invite back out and never sent its own.
func TestThirdPartyInvitesMadeHere(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ts := newThreeServers(t)
		log := test.EmbeddedLog(t, 4)
		newSender(t, ts.a, db, log, ts.rooms, testSenderConfig())

		tpi := func(from *server, sender, invitee string) gomatrixserverlib.PDU {
			return from.event(t, ts.roomID, sender, spec.MRoomMember, &invitee, map[string]any{"membership": spec.Invite,
				"third_party_invite": map[string]any{"display_name": "c...", "signed": map[string]any{"mxid": invitee, "token": "tok"}}})
		}
		madeHere := tpi(ts.a, ts.b.user("b"), ts.a.user("x"))
		madeByB := tpi(ts.b, ts.a.user("a"), ts.b.user("y"))
		z := ts.b.user("z")
		countersigned := ts.a.event(t, ts.roomID, ts.a.user("a"), spec.MRoomMember, &z, map[string]string{"membership": spec.Invite}).
			Sign(string(ts.b.name), ts.b.keyID, ts.b.key)
		marker := ts.a.event(t, ts.roomID, ts.a.user("a"), "m.room.message", nil, map[string]any{"body": "marker"})
		produceEvents(t, log, madeHere, madeByB, countersigned, marker)

		want := eventIDs([]gomatrixserverlib.PDU{madeHere, countersigned, marker})
		for _, s := range []*server{ts.b, ts.c} {
			if got := s.waitPDUs(len(want), eventually); !slices.Equal(got, want) {
				t.Fatalf("%s got %v, want %v", s.name, got, want)
			}
		}
	})
}

// TestDownDestinationGetsQueueAfterRestart: while B is down its transactions are retried
// with growing waits; the sender restarts meanwhile; once B is up it gets every event once,
// in order.
func TestDownDestinationGetsQueueAfterRestart(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ts := newThreeServers(t)
		ts.b.down.Store(true)
		log := test.EmbeddedLog(t, 4)
		cfg := testSenderConfig()
		cfg.MinBackoff = config200ms()
		snd := newSender(t, ts.a, db, log, ts.rooms, cfg)

		var sent []gomatrixserverlib.PDU
		for i := range 70 {
			sent = append(sent, ts.a.event(t, ts.roomID, ts.a.user("a"), "m.room.message", nil, map[string]any{"body": i}))
		}
		produceEvents(t, log, sent...)
		ts.c.waitPDUs(len(sent), eventually) // C is up and unaffected
		for deadline := time.Now().Add(eventually); len(ts.b.tries()) < 3; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d tries to reach B", len(ts.b.tries()))
			}
		}
		at := ts.b.tries()
		// Backoff: 200 ms after the first failure, 400 ms after the second. The sender sees a
		// try fail after its last connection attempt reached B, and starts the next one
		// (origin_server_ts, in milliseconds) its backoff later; a loaded machine only
		// stretches the waits.
		if wait1, wait2 := at[1].start.Sub(at[0].lastAttempt), at[2].start.Sub(at[1].lastAttempt); wait1 < 199*time.Millisecond || wait2 < 399*time.Millisecond {
			t.Fatalf("retries %s and %s after the failures, want at least 200ms and then at least 400ms", wait1, wait2)
		}

		snd.stop()
		snd.start()
		ts.b.down.Store(false)
		ts.b.waitPDUs(len(sent), eventually)
		// A marker queued now is sent after everything queued before it, resent
		// transactions included: once B has it, B has all it will ever get of the others.
		marker := ts.a.event(t, ts.roomID, ts.a.user("a"), "m.room.message", nil, map[string]any{"body": "marker"})
		produceEvents(t, log, marker)
		got := ts.b.waitPDUs(len(sent)+1, eventually)
		if want := append(eventIDs(sent), marker.EventID()); !slices.Equal(got, want) {
			t.Fatalf("B got %d PDUs, want the %d sent, once each, in order", len(got), len(want))
		}
	})
}

func config200ms() config.Duration { return config.Duration(200 * time.Millisecond) }

// TestBlacklistedDestinationResumesWhenSeen: after blacklist_after failures nothing is
// tried until the server shows up (PerformServerAlive); then its queue is sent at once.
func TestBlacklistedDestinationResumesWhenSeen(t *testing.T) {
	ts := newThreeServers(t)
	ts.b.down.Store(true)
	log := test.EmbeddedLog(t, 4)
	cfg := testSenderConfig()
	cfg.BlacklistAfter, cfg.BlacklistFor = 2, config.Duration(time.Hour)
	cfg.MinBackoff = config.Duration(300 * time.Millisecond)
	db, err := sqlutil.Open("file:" + t.TempDir() + "/fs.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	snd := newSender(t, ts.a, db, log, ts.rooms, cfg)
	ev := ts.a.event(t, ts.roomID, ts.a.user("a"), "m.room.message", nil, map[string]any{"body": "hi"})
	produceEvents(t, log, ev)
	// The second failure, once the sender has counted it, is followed by the blacklist
	// (connection attempts seen at B may still belong to a try in progress).
	for deadline := time.Now().Add(eventually); snd.failedTransactions() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v failed transactions, %d tries to reach B", snd.failedTransactions(), len(ts.b.tries()))
		}
	}
	ts.b.down.Store(false)
	time.Sleep(time.Second) // over two backoffs' worth, for a retry that must not come
	aliveAt := time.Now().Truncate(time.Millisecond)
	snd.alive(ts.b.name)
	if got := ts.b.waitPDUs(1, eventually); got[0] != ev.EventID() {
		t.Fatalf("B got %v", got)
	}
	if tries := ts.b.tries(); len(tries) != 3 || tries[2].start.Before(aliveAt) {
		t.Fatalf("tries %v, the server seen at %v: want two, then one after it was seen", tries, aliveAt)
	}
}

// TestEDUs: typing (start and stop), public read receipts, presence and send-to-device of
// our users reach the servers they concern as m.typing, m.receipt, m.presence and
// m.direct_to_device EDUs. Private receipts and other servers' users' EDUs never leave.
func TestEDUs(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ts := newThreeServers(t)
		// One partition: each topic's records are consumed in the order written, so markers
		// written last are sent after everything before them.
		log := test.EmbeddedLog(t, 1)
		newSender(t, ts.a, db, log, ts.rooms, testSenderConfig())
		a, b := ts.a.user("a"), ts.b.user("b")
		later := time.Now().Add(time.Minute).UnixMilli()

		produceJSON(t, log, eduapi.TopicOutputTypingEvent, ts.roomID, eduapi.OutputTypingEvent{RoomID: ts.roomID,
			Users: []eduapi.TypingUser{{UserID: a, ExpiresTS: later}, {UserID: b, ExpiresTS: later}}})
		produceJSON(t, log, eduapi.TopicOutputTypingEvent, ts.roomID, eduapi.OutputTypingEvent{RoomID: ts.roomID,
			Users: []eduapi.TypingUser{{UserID: b, ExpiresTS: later}}})
		produceJSON(t, log, receiptapi.TopicOutputReceiptEvent, ts.roomID, receiptapi.OutputReceiptEvent{RoomID: ts.roomID, UserID: a,
			Type: receiptapi.ReceiptReadPrivate, EventID: "$private", TS: 1})
		produceJSON(t, log, receiptapi.TopicOutputReceiptEvent, ts.roomID, receiptapi.OutputReceiptEvent{RoomID: ts.roomID, UserID: a,
			Type: receiptapi.ReceiptRead, EventID: "$public", TS: 2})
		produceJSON(t, log, receiptapi.TopicOutputReceiptEvent, ts.roomID, receiptapi.OutputReceiptEvent{RoomID: ts.roomID, UserID: b,
			Type: receiptapi.ReceiptRead, EventID: "$theirs", TS: 3})
		produceJSON(t, log, presenceapi.TopicOutputPresenceEvent, a, presenceapi.OutputPresenceEvent{Presence: presenceapi.Presence{
			UserID: a, Presence: presenceapi.Online, LastActiveTS: time.Now().UnixMilli(), CurrentlyActive: true}})
		produceJSON(t, log, eduapi.TopicOutputSendToDeviceEvent, b, eduapi.OutputSendToDeviceEvent{MessageID: "m1", Sender: a,
			Type: "m.test", UserID: b, DeviceID: "DEV", Content: json.RawMessage(`{"x":1}`)})

		want := []string{ // content in canonical JSON, as it travels
			`m.typing {"room_id":"` + ts.roomID + `","typing":true,"user_id":"` + a + `"}`,
			`m.typing {"room_id":"` + ts.roomID + `","typing":false,"user_id":"` + a + `"}`,
			`m.receipt {"` + ts.roomID + `":{"m.read":{"` + a + `":{"data":{"ts":2},"event_ids":["$public"]}}}}`,
			`m.direct_to_device {"message_id":"m1","messages":{"` + b + `":{"DEV":{"x":1}}},"sender":"` + a + `","type":"m.test"}`,
		}
		// A marker on every topic; once a server has them all, it has every EDU it will get.
		c := ts.c.user("c")
		produceJSON(t, log, eduapi.TopicOutputTypingEvent, ts.roomID, eduapi.OutputTypingEvent{RoomID: ts.roomID,
			Users: []eduapi.TypingUser{{UserID: a, ExpiresTS: later}}})
		produceJSON(t, log, receiptapi.TopicOutputReceiptEvent, ts.roomID, receiptapi.OutputReceiptEvent{RoomID: ts.roomID, UserID: a,
			Type: receiptapi.ReceiptRead, EventID: "$marker", TS: 9})
		produceJSON(t, log, presenceapi.TopicOutputPresenceEvent, a, presenceapi.OutputPresenceEvent{Presence: presenceapi.Presence{
			UserID: a, Presence: presenceapi.Unavailable, LastActiveTS: time.Now().UnixMilli()}})
		for _, u := range []string{b, c} {
			produceJSON(t, log, eduapi.TopicOutputSendToDeviceEvent, u, eduapi.OutputSendToDeviceEvent{MessageID: "marker", Sender: a,
				Type: "m.test", UserID: u, DeviceID: "DEV", Content: json.RawMessage(`{}`)})
		}
		allMarkers := func(edus []gomatrixserverlib.EDU) bool {
			return hasEDU(edus, "m.typing", `"typing":true`) && hasEDU(edus, "m.receipt", "$marker") &&
				hasEDU(edus, "m.presence", presenceapi.Unavailable) && hasEDU(edus, "m.direct_to_device", `"marker"`)
		}
		isMarker := func(e gomatrixserverlib.EDU) bool {
			return strings.Contains(string(e.Content), "marker") || strings.Contains(string(e.Content), presenceapi.Unavailable)
		}
		edus := ts.b.waitEDUs(eventually, allMarkers)
		var got []string
		var presence []gomatrixserverlib.EDU
		for _, e := range edus {
			if e.Origin != string(ts.a.name) || e.Destination != string(ts.b.name) {
				t.Fatalf("EDU from %q to %q", e.Origin, e.Destination)
			}
			if isMarker(e) {
				continue
			}
			if e.Type == "m.presence" {
				presence = append(presence, e)
				continue
			}
			got = append(got, e.Type+" "+string(e.Content))
		}
		// Topics are consumed independently: compare each kind in order.
		// The typing marker is a's second start, the last typing EDU: leave it out.
		for i := len(got) - 1; i >= 0; i-- {
			if strings.HasPrefix(got[i], "m.typing ") {
				got = slices.Delete(got, i, i+1)
				break
			}
		}
		for _, kind := range []string{"m.typing", "m.receipt", "m.direct_to_device"} {
			if !slices.Equal(filter(got, kind), filter(want, kind)) {
				t.Fatalf("B's %s EDUs:\n%v\nwant:\n%v", kind, filter(got, kind), filter(want, kind))
			}
		}
		checkPresence(t, presence, a)
		// C shares the room: typing, receipt and presence, but no to-device message.
		var types []string
		for _, e := range ts.c.waitEDUs(eventually, allMarkers) {
			if !isMarker(e) {
				types = append(types, e.Type)
			}
		}
		slices.Sort(types)
		// Three typing EDUs: a starts, stops, and starts again (the marker).
		if !slices.Equal(types, []string{"m.presence", "m.receipt", "m.typing", "m.typing", "m.typing"}) {
			t.Fatalf("C got %v", types)
		}
	})
}

// hasEDU reports whether one of edus is of type typ with content containing substr.
func hasEDU(edus []gomatrixserverlib.EDU, typ, substr string) bool {
	return slices.ContainsFunc(edus, func(e gomatrixserverlib.EDU) bool {
		return e.Type == typ && strings.Contains(string(e.Content), substr)
	})
}

func filter(list []string, prefix string) []string {
	var out []string
	for _, s := range list {
		if len(s) > len(prefix) && s[:len(prefix)+1] == prefix+" " {
			out = append(out, s)
		}
	}
	return out
}

func checkPresence(t *testing.T, edus []gomatrixserverlib.EDU, userID string) {
	t.Helper()
	if len(edus) != 1 {
		t.Fatalf("%d presence EDUs, want 1", len(edus))
	}
	var content struct {
		Push []struct {
			UserID          string `json:"user_id"`
			Presence        string `json:"presence"`
			LastActiveAgo   *int64 `json:"last_active_ago"`
			CurrentlyActive bool   `json:"currently_active"`
		} `json:"push"`
	}
	if err := json.Unmarshal(edus[0].Content, &content); err != nil {
		t.Fatal(err)
	}
	if len(content.Push) != 1 || content.Push[0].UserID != userID || content.Push[0].Presence != "online" ||
		content.Push[0].LastActiveAgo == nil || !content.Push[0].CurrentlyActive {
		t.Fatalf("presence EDU %s", edus[0].Content)
	}
}
