package federationapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// room is a room on node b, built with b's key; its events are in b's roomserver.
type room struct {
	*roomtest.Remote
	b     *node
	alice string
	last  gomatrixserverlib.PDU
	auth  []gomatrixserverlib.PDU // create, alice's join, power levels
	depth int64
}

// newRoomOn creates a world-readable public room on b with alice as its creator.
func newRoomOn(t *testing.T, b *node) *room {
	return newRoomVersionOn(t, b, gomatrixserverlib.RoomVersionV10)
}

// newRoomVersionOn is newRoomOn for a room of the given version.
func newRoomVersionOn(t *testing.T, b *node, version gomatrixserverlib.RoomVersion) *room {
	r := &room{Remote: &roomtest.Remote{T: t, Key: b.key, KeyID: b.keyID, Origin: b.name, Version: version,
		RoomID: fmt.Sprintf("!r%d:%s", time.Now().UnixNano(), b.name)}, b: b, alice: "@alice:" + string(b.name)}
	create := r.Event(r.alice, spec.MRoomCreate, roomtest.StateKey(""), map[string]string{"creator": r.alice, "room_version": string(version)}, 1, nil, nil)
	join := r.Event(r.alice, spec.MRoomMember, roomtest.StateKey(r.alice), map[string]string{"membership": "join"}, 2, []gomatrixserverlib.PDU{create}, []gomatrixserverlib.PDU{create})
	pl := r.Event(r.alice, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{r.alice: 100}}, 3, []gomatrixserverlib.PDU{join}, []gomatrixserverlib.PDU{create, join})
	r.auth = []gomatrixserverlib.PDU{create, join, pl}
	r.last, r.depth = pl, 3
	b.inputAll(t, r.RoomID, create, join, pl)
	r.state(spec.MRoomJoinRules, map[string]string{"join_rule": "public"})
	r.state(spec.MRoomHistoryVisibility, map[string]string{"history_visibility": "world_readable"})
	return r
}

// next is alice's next event on b (not yet input anywhere).
func (r *room) next(evType string, stateKey *string, content any) gomatrixserverlib.PDU {
	r.depth++
	ev := r.Event(r.alice, evType, stateKey, content, r.depth, []gomatrixserverlib.PDU{r.last}, r.auth)
	r.last = ev
	return ev
}

func (r *room) state(evType string, content any) {
	r.b.inputAll(r.T.(*testing.T), r.RoomID, r.next(evType, roomtest.StateKey(""), content))
}

func (r *room) message(body string) gomatrixserverlib.PDU {
	ev := r.next("m.room.message", nil, map[string]string{"body": body})
	r.b.inputAll(r.T.(*testing.T), r.RoomID, ev)
	return ev
}

// inputAll writes events as federated to the node's roomserver, all of which must pass.
func (n *node) inputAll(t *testing.T, roomID string, evs ...gomatrixserverlib.PDU) {
	t.Helper()
	in := make([]rsapi.InputRoomEvent, len(evs))
	for i, ev := range evs {
		in[i] = roomtest.Input(rsapi.KindFederated, ev)
	}
	res, err := n.input.InputRoomEvents(context.Background(), &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, RoomVersion: string(evs[0].Version()), Events: in}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Results {
		if r.Err != nil || r.SoftFailed {
			t.Fatalf("event %d on %s: %+v", i, n.name, r)
		}
	}
}

// placed reports whether the node has the event in its timeline.
func (n *node) placed(t *testing.T, roomID, eventID string) (found, placed bool) {
	t.Helper()
	res, err := n.rs.API().QueryEventsByID(context.Background(), &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{eventID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) == 0 {
		return false, false
	}
	return true, len(res.OutlierIDs) == 0
}

// copyRoom gives a the room's events so far, as if a had joined earlier.
func copyRoom(t *testing.T, a *node, r *room) {
	t.Helper()
	res, err := r.b.rs.API().QueryCurrentState(context.Background(), &rsapi.QueryCurrentStateRequest{RoomID: r.RoomID})
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]gomatrixserverlib.PDU, len(res.StateEvents))
	for i, e := range res.StateEvents {
		evs[i] = e.PDU
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	a.inputAll(t, r.RoomID, evs...)
}

func sendTxn(t *testing.T, from, to *node, txnID string, pdus ...gomatrixserverlib.PDU) (fclient.RespSend, error) {
	t.Helper()
	raw := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		raw[i] = p.JSON()
	}
	return from.client.SendTransaction(context.Background(), gomatrixserverlib.Transaction{
		TransactionID: gomatrixserverlib.TransactionID(txnID), Origin: from.name, Destination: to.name,
		OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: raw,
	})
}

// TestSendTransaction: B sends A transactions for a room both are in. Events after a gap
// are placed after fetching the gap (/get_missing_events) or the state before them
// (/state_ids, /event); bad events are refused and never stored.
func TestSendTransaction(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomOn(t, b)
		copyRoom(t, a, r)

		// One new event.
		m1 := r.message("one")
		res, err := sendTxn(t, b, a, "t1", m1)
		if err != nil || res.PDUs[m1.EventID()].Error != "" {
			t.Fatalf("send m1: %+v %v", res, err)
		}
		if _, ok := a.placed(t, r.RoomID, m1.EventID()); !ok {
			t.Fatal("m1 not placed")
		}
		// A gap of two events, filled with /get_missing_events.
		m2, m3, m4 := r.message("two"), r.message("three"), r.message("four")
		if res, err = sendTxn(t, b, a, "t2", m4); err != nil || res.PDUs[m4.EventID()].Error != "" {
			t.Fatalf("send m4: %+v %v", res, err)
		}
		for _, ev := range []gomatrixserverlib.PDU{m2, m3, m4} {
			if _, ok := a.placed(t, r.RoomID, ev.EventID()); !ok {
				t.Fatalf("%s not placed after the gap was filled", ev.EventID())
			}
		}
		// A gap too long to fill in one round: the events /get_missing_events gives are
		// placed, the earliest with the state before its missing prev event from /state_ids
		// (that prev event is stored as an outlier), then the event itself.
		var skipped []gomatrixserverlib.PDU
		for i := 0; i < 25; i++ {
			skipped = append(skipped, r.message(fmt.Sprint("skipped ", i)))
		}
		topic := r.next("m.room.topic", roomtest.StateKey(""), map[string]string{"topic": "after the gap"})
		b.inputAll(t, r.RoomID, topic)
		if res, err = sendTxn(t, b, a, "t3", topic); err != nil || res.PDUs[topic.EventID()].Error != "" {
			t.Fatalf("send after a long gap: %+v %v", res, err)
		}
		if _, ok := a.placed(t, r.RoomID, topic.EventID()); !ok {
			t.Fatal("event after a long gap not placed")
		}
		if found, _ := a.placed(t, r.RoomID, skipped[0].EventID()); found {
			t.Fatal("the start of a long gap was fetched")
		}
		if found, placed := a.placed(t, r.RoomID, skipped[4].EventID()); !found || placed {
			t.Fatalf("the missing prev event of the fetched events: found %v, placed %v; want an outlier", found, placed)
		}
		for _, ev := range skipped[5:] {
			if _, ok := a.placed(t, r.RoomID, ev.EventID()); !ok {
				t.Fatalf("fetched missing event %s not placed", ev.EventID())
			}
		}
		if b.served("/_matrix/federation/v1/get_missing_events/"+r.RoomID) != 2 || b.served("/_matrix/federation/v1/state_ids/"+r.RoomID) != 1 {
			t.Fatalf("B served %v", b.hits)
		}
		cur, err := a.rs.API().QueryCurrentState(context.Background(), &rsapi.QueryCurrentStateRequest{RoomID: r.RoomID, Tuples: []rsapi.StateKeyTuple{{EventType: "m.room.topic"}}})
		if err != nil || len(cur.StateEvents) != 1 || cur.StateEvents[0].EventID() != topic.EventID() {
			t.Fatalf("topic on A: %+v %v", cur, err)
		}

		// The same transaction ID again gets the stored answer and applies nothing.
		m5 := r.message("five")
		res, err = sendTxn(t, b, a, "t1", m5)
		if err != nil || len(res.PDUs) != 1 || res.PDUs[m1.EventID()].Error != "" {
			t.Fatalf("replayed transaction: %+v %v", res, err)
		}
		if found, _ := a.placed(t, r.RoomID, m5.EventID()); found {
			t.Fatal("a replayed transaction ID applied a new event")
		}

		// Several events in one transaction: a chain (the first on the room's extremity, each
		// on the one before) is placed as one roomserver message, an event already placed is
		// answered again, and an event after a gap still gets the gap filled.
		m6, m7 := r.message("six"), r.message("seven")
		m8, m9 := r.message("eight"), r.message("nine")
		res, err = sendTxn(t, b, a, "t8", m5, m6, m7, m1, m9)
		if err != nil || len(res.PDUs) != 5 {
			t.Fatalf("transaction of several events: %+v %v", res, err)
		}
		for _, ev := range []gomatrixserverlib.PDU{m5, m6, m7, m1, m8, m9} {
			if res.PDUs[ev.EventID()].Error != "" {
				t.Fatalf("%s refused: %+v", ev.EventID(), res.PDUs[ev.EventID()])
			}
			if _, ok := a.placed(t, r.RoomID, ev.EventID()); !ok {
				t.Fatalf("%s not placed", ev.EventID())
			}
		}
		if b.served("/_matrix/federation/v1/get_missing_events/"+r.RoomID) != 3 {
			t.Fatalf("B served %v", b.hits)
		}

		// Refused events: a forged signature, a sender of another server, an event that
		// fails auth. The first two are answered with an error and not stored; the third,
		// processed and rejected by the auth rules, with an empty result as the spec has it,
		// and kept as rejected (never served).
		_, forger, _ := ed25519.GenerateKey(nil)
		forged := (&roomtest.Remote{T: t, Key: forger, KeyID: b.keyID, Origin: b.name, Version: r.Version, RoomID: r.RoomID}).
			Event(r.alice, "m.room.message", nil, map[string]string{"body": "forged"}, r.depth+1, []gomatrixserverlib.PDU{r.last}, r.auth)
		otherServer := (&roomtest.Remote{T: t, Key: b.key, KeyID: b.keyID, Origin: "evil.test", Version: r.Version, RoomID: r.RoomID}).
			Event("@eve:evil.test", "m.room.message", nil, map[string]string{"body": "hi"}, r.depth+1, []gomatrixserverlib.PDU{r.last}, r.auth)
		stranger := r.Event("@carol:"+string(b.name), "m.room.message", nil, map[string]string{"body": "not joined"}, r.depth+1, []gomatrixserverlib.PDU{r.last}, r.auth[:1])
		res, err = sendTxn(t, b, a, "t4", forged, otherServer, stranger)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := res.PDUs[stranger.EventID()]; !ok || r.Error != "" {
			t.Errorf("the event rejected by the auth rules is answered %+v, want an empty result", res.PDUs)
		}
		for name, ev := range map[string]gomatrixserverlib.PDU{"forged": forged, "other server": otherServer, "stranger": stranger} {
			if res.PDUs[ev.EventID()].Error == "" && ev != stranger {
				t.Errorf("%s event accepted: %+v", name, res.PDUs)
			}
			if found, _ := a.placed(t, r.RoomID, ev.EventID()); found {
				t.Errorf("%s event served", name)
			}
		}
		if rej, err := a.rs.API().QueryEventsByID(context.Background(), &rsapi.QueryEventsByIDRequest{RoomID: r.RoomID, EventIDs: []string{stranger.EventID(), forged.EventID()}}); err != nil ||
			len(rej.RejectedIDs) != 1 || rej.RejectedIDs[0] != stranger.EventID() {
			t.Errorf("rejected events kept: %+v %v, want the stranger's", rej, err)
		}
		if !strings.Contains(res.PDUs[forged.EventID()].Error, "signature") {
			t.Errorf("forged event's error: %q", res.PDUs[forged.EventID()].Error)
		}

		// A content hash that does not match: the event is redacted and kept.
		tampered := r.message("secret")
		raw := strings.Replace(string(tampered.JSON()), "secret", "tampered", 1)
		fr := fclient.NewFederationRequest(http.MethodPut, b.name, a.name, "/_matrix/federation/v1/send/t5")
		if err = fr.SetContent(map[string]any{"origin": b.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{json.RawMessage(raw)}}); err != nil {
			t.Fatal(err)
		}
		if err = fr.Sign(b.name, b.keyID, b.key); err != nil {
			t.Fatal(err)
		}
		if err = send(t, b, &fr, nil); err != nil {
			t.Fatal(err)
		}
		got, err := a.rs.API().QueryEventsByID(context.Background(), &rsapi.QueryEventsByIDRequest{RoomID: r.RoomID, EventIDs: []string{tampered.EventID()}})
		if err != nil || len(got.Events) != 1 || strings.Contains(string(got.Events[0].JSON()), "tampered") || !got.Events[0].Redacted() {
			t.Fatalf("tampered event on A: %+v %v", got, err)
		}

		// Too many PDUs: 400, nothing applied.
		var many []gomatrixserverlib.PDU
		for i := 0; i < 51; i++ {
			many = append(many, m1)
		}
		_, err = sendTxn(t, b, a, "t6", many...)
		wantHTTP(t, err, http.StatusBadRequest, "M_BAD_JSON")
		// Unsigned: 401.
		fr = fclient.NewFederationRequest(http.MethodPut, b.name, a.name, "/_matrix/federation/v1/send/t7")
		if err = fr.SetContent(map[string]any{"pdus": []any{}}); err != nil {
			t.Fatal(err)
		}
		wantHTTP(t, send(t, b, &fr, nil), http.StatusUnauthorized, "M_UNAUTHORIZED")
	})
}

// TestSendThirdPartyInvite: the invitee's server may make a third-party invite for its
// sender and send it (spec server-server API, "Third-party invites"; "the server which
// actually sends the event may be a different server"). B, the room's server, accepts from
// A an invite of A's user that alice (B) sent by email, signed by A alone, when the identity
// server signed its block with the m.room.third_party_invite's key. Refused: the same with
// a block signed by another key (the auth rules: handled, not stored), one of a user of
// another server than its origin, a plain invite (no third_party_invite) in alice's name,
// and an invite not signed by A's key.
func TestSendThirdPartyInvite(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomOn(t, b)
		isPub, isKey, _ := ed25519.GenerateKey(nil)
		pub := base64.RawStdEncoding.EncodeToString(isPub)
		tpi := r.next("m.room.third_party_invite", roomtest.StateKey("tok"), map[string]any{"display_name": "c...", "public_key": pub,
			"public_keys": []map[string]string{{"public_key": pub}}})
		b.inputAll(t, r.RoomID, tpi)
		auth := append(slices.Clone(r.auth), tpi)

		byA := &roomtest.Remote{T: t, Key: a.key, KeyID: a.keyID, Origin: a.name, Version: r.Version, RoomID: r.RoomID}
		invite := func(by *roomtest.Remote, invitee string, signer ed25519.PrivateKey) gomatrixserverlib.PDU {
			block, err := json.Marshal(map[string]string{"mxid": invitee, "token": "tok"})
			if err != nil {
				t.Fatal(err)
			}
			signed, err := gomatrixserverlib.SignJSON("id.example", "ed25519:0", signer, block)
			if err != nil {
				t.Fatal(err)
			}
			content := map[string]any{"membership": spec.Invite, "third_party_invite": map[string]any{"display_name": "c...", "signed": json.RawMessage(signed)}}
			return by.Event(r.alice, spec.MRoomMember, &invitee, content, r.depth+1, []gomatrixserverlib.PDU{r.last}, auth)
		}
		carol := "@carol:" + string(a.name)
		good := invite(byA, carol, isKey)
		res, err := sendTxn(t, a, b, "t1", good)
		if err != nil || res.PDUs[good.EventID()].Error != "" {
			t.Fatalf("third-party invite made by the invitee's server: %+v %v", res, err)
		}
		cur, err := b.rs.API().QueryCurrentState(context.Background(), &rsapi.QueryCurrentStateRequest{RoomID: r.RoomID,
			Tuples: []rsapi.StateKeyTuple{{EventType: spec.MRoomMember, StateKey: carol}}})
		if err != nil || len(cur.StateEvents) != 1 || cur.StateEvents[0].EventID() != good.EventID() {
			t.Fatalf("carol's membership on B: %+v %v", cur, err)
		}

		_, otherKey, _ := ed25519.GenerateKey(nil)
		badBlock := invite(byA, "@dave:"+string(a.name), otherKey)
		notOrigins := invite(byA, "@erin:"+string(b.name), isKey)
		plain := byA.Event(r.alice, spec.MRoomMember, roomtest.StateKey("@fred:"+string(a.name)), map[string]string{"membership": spec.Invite},
			r.depth+1, []gomatrixserverlib.PDU{r.last}, auth)
		forged := invite(&roomtest.Remote{T: t, Key: otherKey, KeyID: a.keyID, Origin: a.name, Version: r.Version, RoomID: r.RoomID}, "@gina:"+string(a.name), isKey)
		if res, err = sendTxn(t, a, b, "t2", badBlock, notOrigins, plain, forged); err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]struct {
			ev      gomatrixserverlib.PDU
			wantErr string
		}{"block of another key": {badBlock, ""}, "invitee of another server": {notOrigins, "not a user of"}, "plain invite": {plain, "not a user of"},
			"not signed by A": {forged, "signature"}} {
			if got := res.PDUs[c.ev.EventID()].Error; c.wantErr == "" && got != "" || !strings.Contains(got, c.wantErr) {
				t.Errorf("%s: answered %q, want %q", name, got, c.wantErr)
			}
			if found, _ := b.placed(t, r.RoomID, c.ev.EventID()); found {
				t.Errorf("%s: stored and served", name)
			}
		}
	})
}

// TestSendInvalidJSONInV6Room: in a room of version 6 (which enforces canonical JSON), a
// transaction holding a PDU with a float in it is refused as a whole with 400 M_BAD_JSON,
// and none of its PDUs, not even the valid one before it, is applied (sytest "Server
// rejects invalid JSON in a version 6 room").
func TestSendInvalidJSONInV6Room(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomVersionOn(t, b, gomatrixserverlib.RoomVersionV6)
		copyRoom(t, a, r)
		good := r.message("good")
		bad := strings.Replace(string(r.message("bad").JSON()), `"body":"bad"`, `"bad_val":1.1,"body":"bad"`, 1)
		if !strings.Contains(bad, "1.1") {
			t.Fatalf("no float in %s", bad)
		}
		fr := fclient.NewFederationRequest(http.MethodPut, b.name, a.name, "/_matrix/federation/v1/send/badjson")
		if err := fr.SetContent(map[string]any{"origin": b.name, "origin_server_ts": time.Now().UnixMilli(),
			"pdus": []json.RawMessage{good.JSON(), json.RawMessage(bad)}}); err != nil {
			t.Fatal(err)
		}
		if err := fr.Sign(b.name, b.keyID, b.key); err != nil {
			t.Fatal(err)
		}
		wantHTTP(t, send(t, b, &fr, nil), http.StatusBadRequest, "M_BAD_JSON")
		if found, _ := a.placed(t, r.RoomID, good.EventID()); found {
			t.Fatal("the valid PDU of a refused transaction was applied")
		}
	})
}

// TestSendAfterRejectedAndMissingEvents: an event whose prev event was rejected is placed
// (the rejected one is kept for that, spec "Rejection") and /send answers both with empty
// results; a pushed event whose prev events its sender does not give (/get_missing_events)
// is refused without asking for the state before them.
func TestSendAfterRejectedAndMissingEvents(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomOn(t, b)
		copyRoom(t, a, r)
		m1 := r.message("one")
		if res, err := sendTxn(t, b, a, "t1", m1); err != nil || res.PDUs[m1.EventID()].Error != "" {
			t.Fatalf("send m1: %+v %v", res, err)
		}

		stranger := r.Event("@carol:"+string(b.name), "m.room.message", nil, map[string]string{"body": "not joined"}, r.depth+1, []gomatrixserverlib.PDU{m1}, r.auth[:1])
		after := r.Event(r.alice, "m.room.message", nil, map[string]string{"body": "after"}, r.depth+2, []gomatrixserverlib.PDU{stranger}, r.auth)
		res, err := sendTxn(t, b, a, "t2", stranger, after)
		if err != nil || len(res.PDUs) != 2 || res.PDUs[stranger.EventID()].Error != "" || res.PDUs[after.EventID()].Error != "" {
			t.Fatalf("send a rejected event and one after it: %+v %v", res, err)
		}
		if _, ok := a.placed(t, r.RoomID, after.EventID()); !ok {
			t.Fatal("the event after a rejected one is not placed")
		}
		info, err := a.rs.API().QueryRoomInfo(context.Background(), &rsapi.QueryRoomInfoRequest{RoomID: r.RoomID})
		if err != nil || len(info.LatestEventIDs) != 1 || info.LatestEventIDs[0] != after.EventID() {
			t.Fatalf("forward extremities on A: %+v %v", info, err)
		}
		if n := b.served("/_matrix/federation/v1/get_missing_events/" + r.RoomID); n != 0 {
			t.Fatalf("A asked for missing events %d times", n)
		}

		// B never had unseen: it cannot give it, and A must not take the state from B.
		unseen := r.Event(r.alice, "m.room.message", nil, map[string]string{"body": "unseen"}, r.depth+3, []gomatrixserverlib.PDU{after}, r.auth)
		pushed := r.Event(r.alice, "m.room.message", nil, map[string]string{"body": "pushed"}, r.depth+4, []gomatrixserverlib.PDU{unseen}, r.auth)
		res, err = sendTxn(t, b, a, "t3", pushed)
		if err != nil || res.PDUs[pushed.EventID()].Error == "" {
			t.Fatalf("send an event whose prev event its sender does not give: %+v %v", res, err)
		}
		if found, _ := a.placed(t, r.RoomID, pushed.EventID()); found {
			t.Fatal("an event after an unfilled gap was placed")
		}
		if b.served("/_matrix/federation/v1/get_missing_events/"+r.RoomID) != 1 || b.served("/_matrix/federation/v1/state_ids/"+r.RoomID) != 0 || b.served("/_matrix/federation/v1/state/"+r.RoomID) != 0 {
			t.Fatalf("B served %v", b.hits)
		}
	})
}

// TestRemoteJoin: a user of A joins B's room with make_join and send_join; B places the
// join, and A stores the answer's auth chain and state as outliers and the join with the
// state before it, after which both servers agree on the room's members.
func TestRemoteJoin(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomOn(t, b)
		r.message("before the join")
		ctx := context.Background()
		dave := "@dave:" + string(a.name)

		mj, err := a.client.MakeJoin(ctx, a.name, b.name, r.RoomID, dave)
		if err != nil {
			t.Fatalf("make_join: %v", err)
		}
		proto := mj.JoinEvent
		verImpl := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion)
		join, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), a.name, a.keyID, a.key)
		if err != nil {
			t.Fatal(err)
		}
		sj, err := a.client.SendJoin(ctx, a.name, b.name, join)
		if err != nil {
			t.Fatalf("send_join: %v", err)
		}
		if _, ok := b.placed(t, r.RoomID, join.EventID()); !ok {
			t.Fatal("B did not place the join")
		}
		// A checks and stores the answer.
		var outliers []rsapi.InputRoomEvent
		var stateIDs []string
		seen := map[string]bool{}
		for i, set := range []gomatrixserverlib.EventJSONs{sj.AuthEvents, sj.StateEvents} {
			var evs []gomatrixserverlib.PDU
			for _, raw := range set {
				ev, err := verImpl.NewEventFromUntrustedJSON(raw)
				if err != nil {
					t.Fatal(err)
				}
				if err = gomatrixserverlib.VerifyEventSignatures(ctx, ev, a.fed.KeyRing(), func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
					return spec.NewUserID(string(s), true)
				}); err != nil {
					t.Fatalf("send_join answer: %v", err)
				}
				evs = append(evs, ev)
				if i == 1 {
					stateIDs = append(stateIDs, ev.EventID())
				}
			}
			for _, ev := range gomatrixserverlib.ReverseTopologicalOrdering(evs, gomatrixserverlib.TopologicalOrderByAuthEvents) {
				if !seen[ev.EventID()] {
					seen[ev.EventID()] = true
					outliers = append(outliers, roomtest.Input(rsapi.KindOutlier, ev))
				}
			}
		}
		ie := roomtest.Input(rsapi.KindFederated, join)
		ie.StateEventIDs = stateIDs
		res, err := a.input.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: r.RoomID, RoomVersion: string(mj.RoomVersion), Events: append(outliers, ie)}})
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range res.Results {
			if x.Err != nil || x.SoftFailed {
				t.Fatalf("storing the join on A, event %d: %+v", i, x)
			}
		}
		for _, n := range []*node{a, b} {
			m, err := n.rs.API().QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: r.RoomID, UserID: dave})
			if err != nil || m.Membership != spec.Join {
				t.Fatalf("dave on %s: %+v %v", n.name, m, err)
			}
		}
		// B's next message reaches A through /send and builds on the join.
		r.last, r.depth = join, join.Depth()
		after := r.message("after the join")
		if res, err := sendTxn(t, b, a, "j1", after); err != nil || res.PDUs[after.EventID()].Error != "" {
			t.Fatalf("send after the join: %+v %v", res, err)
		}
		// A user of another server cannot ask B for a join template on A's behalf.
		_, err = a.client.MakeJoin(ctx, a.name, b.name, r.RoomID, "@mallory:"+string(b.name))
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestHistoryVisibilityForServers: B's room turns from world_readable to joined history
// before A's user joins. A then reads B's events through /event, /backfill and
// /get_missing_events: whole where one of A's users could see them by the state at the
// event, redacted (same ID, no content) where none could. C, with no user in the room,
// gets 403 once the room is no longer world readable.
func TestHistoryVisibilityForServers(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b, c := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		r := newRoomOn(t, b)
		public := r.message("said while world readable")
		hidden := r.next(spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "joined"})
		b.inputAll(t, r.RoomID, hidden)
		secret := r.message("said before anyone of A joined")

		dave := "@dave:" + string(a.name)
		mj, err := a.client.MakeJoin(ctx, a.name, b.name, r.RoomID, dave)
		if err != nil {
			t.Fatalf("make_join: %v", err)
		}
		proto := mj.JoinEvent
		// A display name, which a redacted copy would lack.
		if err = proto.SetContent(map[string]string{"membership": spec.Join, "displayname": "Dave"}); err != nil {
			t.Fatal(err)
		}
		join, err := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion).NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), a.name, a.keyID, a.key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = a.client.SendJoin(ctx, a.name, b.name, join); err != nil {
			t.Fatalf("send_join: %v", err)
		}
		r.last, r.depth = join, join.Depth()
		after := r.message("said after dave joined")

		// Each event checked, and whether A may see it whole.
		events := []gomatrixserverlib.PDU{public, hidden, secret, join, after}
		whole := map[string]bool{public.EventID(): true, hidden.EventID(): true, secret.EventID(): false, join.EventID(): true, after.EventID(): true}
		original := map[string]string{}
		for _, e := range events {
			original[e.EventID()] = string(e.Content())
		}
		check := func(what string, pdus []json.RawMessage) {
			t.Helper()
			seen := 0
			for _, raw := range pdus {
				ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromUntrustedJSON(raw)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				want, ok := whole[ev.EventID()]
				if !ok {
					continue
				}
				seen++
				if got := string(ev.Content()) == original[ev.EventID()]; got != want {
					t.Errorf("%s: %s (%s) has content %s, want whole %v", what, ev.EventID(), ev.Type(), ev.Content(), want)
				}
				// A redacted copy still carries B's valid signature.
				if err = gomatrixserverlib.VerifyEventSignatures(ctx, ev, a.fed.KeyRing(), func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
					return spec.NewUserID(string(s), true)
				}); err != nil {
					t.Errorf("%s: %s: %v", what, ev.EventID(), err)
				}
			}
			if seen == 0 {
				t.Fatalf("%s returned none of the events checked", what)
			}
		}

		for _, e := range events {
			txn, err := a.client.GetEvent(ctx, a.name, b.name, e.EventID())
			if err != nil {
				t.Fatalf("/event %s: %v", e.EventID(), err)
			}
			check("/event", txn.PDUs)
		}
		bf, err := a.client.Backfill(ctx, a.name, b.name, r.RoomID, 20, []string{after.EventID()})
		if err != nil {
			t.Fatalf("/backfill: %v", err)
		}
		if len(bf.PDUs) < len(whole) {
			t.Fatalf("/backfill returned %d events, want at least %d", len(bf.PDUs), len(whole))
		}
		check("/backfill", bf.PDUs)
		missing, err := a.client.LookupMissingEvents(ctx, a.name, b.name, r.RoomID, fclient.MissingEvents{
			Limit: 20, LatestEvents: []string{after.EventID()}, EarliestEvents: []string{public.EventID()},
		}, gomatrixserverlib.RoomVersionV10)
		if err != nil {
			t.Fatalf("/get_missing_events: %v", err)
		}
		raws := make([]json.RawMessage, len(missing.Events))
		for i, e := range missing.Events {
			raws[i] = json.RawMessage(e)
		}
		check("/get_missing_events", raws)

		_, err = c.client.GetEvent(ctx, c.name, b.name, public.EventID())
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestServerACL: once B's room has a server ACL that denies IP literals (every server of
// this test), A refuses what B sends for the room: each PDU of a transaction gets an error
// and is not stored, typing and receipts for the room are dropped (presence, which names no
// room, still arrives), and B's /state_ids and make_join get 403 M_FORBIDDEN.
func TestServerACL(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		r := newRoomOn(t, b)
		copyRoom(t, a, r)
		m1 := r.message("before the ACL")
		acl := r.next(internal.MRoomServerACL, roomtest.StateKey(""), map[string]any{"allow": []string{"*"}, "allow_ip_literals": false})
		b.inputAll(t, r.RoomID, acl)
		if res, err := sendTxn(t, b, a, "before", m1, acl); err != nil || res.PDUs[m1.EventID()].Error != "" || res.PDUs[acl.EventID()].Error != "" {
			t.Fatalf("send before the ACL: %+v %v", res, err)
		}

		m2 := r.message("after the ACL")
		res, err := sendTxn(t, b, a, "after", m2)
		if err != nil || !strings.Contains(res.PDUs[m2.EventID()].Error, "server ACL") {
			t.Fatalf("a PDU from a denied server: %+v %v", res, err)
		}
		if found, _ := a.placed(t, r.RoomID, m2.EventID()); found {
			t.Fatal("A stored a PDU from a server its ACL denies")
		}

		typing, receipts, presence := test.FollowTopic(t, a.log, "edu-typing"), test.FollowTopic(t, a.log, "edu-receipt"), test.FollowTopic(t, a.log, "edu-presence")
		edus := []gomatrixserverlib.EDU{
			{Type: "m.typing", Content: mustJSON(t, map[string]any{"room_id": r.RoomID, "user_id": r.alice, "typing": true})},
			{Type: "m.receipt", Content: mustJSON(t, map[string]any{r.RoomID: map[string]any{"m.read": map[string]any{
				r.alice: map[string]any{"event_ids": []string{m1.EventID()}, "data": map[string]any{"ts": 5}}}}})},
			{Type: "m.presence", Content: mustJSON(t, map[string]any{"push": []any{map[string]any{"user_id": r.alice, "presence": "online"}}})},
		}
		if _, err = b.client.SendTransaction(ctx, gomatrixserverlib.Transaction{
			TransactionID: "edus", Origin: b.name, Destination: a.name, OriginServerTS: spec.AsTimestamp(time.Now()), EDUs: edus,
		}); err != nil {
			t.Fatal(err)
		}
		presence.Wait(t, 1, 5*time.Second) // EDUs apply in order: typing and receipts were decided before it
		if n, m := len(typing.Wait(t, 0, 0)), len(receipts.Wait(t, 0, 0)); n != 0 || m != 0 {
			t.Fatalf("%d typing and %d receipt inputs from a denied server", n, m)
		}

		_, err = b.client.LookupStateIDs(ctx, b.name, a.name, r.RoomID, m1.EventID())
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
		_, err = b.client.MakeJoin(ctx, b.name, a.name, r.RoomID, "@newcomer:"+string(b.name))
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
		// An invite from a denied server is refused before anything about the invitee is
		// looked up (an unknown user would otherwise be a 404).
		invite := r.next(spec.MRoomMember, roomtest.StateKey("@nobody:"+string(a.name)), map[string]string{"membership": spec.Invite})
		inviteReq, err := fclient.NewInviteV2Request(invite, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.client.SendInviteV2(ctx, b.name, a.name, inviteReq)
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
}

func mustJSON(t *testing.T, v any) spec.RawJSON {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestACLAllows: the spec's matching rules for m.room.server_acl.
func TestACLAllows(t *testing.T) {
	t.Parallel()
	acl := `{"allow": ["*.example.org", "ok?.test"], "deny": ["bad.example.org"], "allow_ip_literals": false}`
	for server, want := range map[spec.ServerName]bool{
		"chat.example.org":      true,
		"chat.example.org:8448": true,  // the port is ignored
		"bad.example.org":       false, // deny wins over allow
		"ok1.test":              true,
		"ok12.test":             false, // ? is one character
		"example.com":           false, // no allow glob matches
		"1.2.3.4:8448":          false, // IP literals denied
		"[::1]:8448":            false,
	} {
		if got := internal.ACLAllows([]byte(acl), server); got != want {
			t.Errorf("%s: allowed %v, want %v", server, got, want)
		}
	}
	if !internal.ACLAllows([]byte(`{"allow": ["*"]}`), "1.2.3.4") || !internal.ACLAllows([]byte(`{"allow": ["*"], "allow_ip_literals": "false"}`), "1.2.3.4") {
		t.Error("IP literals are allowed unless allow_ip_literals is false")
	}
	if internal.ACLAllows([]byte(`{"allow": ["*"], "deny": ["evil.test"], "allow_ip_literals": "false"}`), "evil.test") {
		t.Error("an allow_ip_literals that is not a boolean lifted the rest of the ACL")
	}
	if internal.ACLAllows([]byte(`{"deny": ["*"]}`), "a.test") || internal.ACLAllows([]byte(`{}`), "a.test") {
		t.Error("an ACL without a matching allow glob denies")
	}
}
