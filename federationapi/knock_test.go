package federationapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/api"
)

// TestPerformKnock: a user of A knocks on a knock room of B that A is not in, through
// make_knock and send_knock. Both servers then hold the knock; A keeps the room state B
// answered (create and join rules among it) in the knock's unsigned knock_room_state.
// make_knock without ver is 400 M_MISSING_PARAM, with only versions the room is not of 400
// M_INCOMPATIBLE_ROOM_VERSION, for a room that takes no knocks 403, for an unknown room
// 404; a knock on a room that takes none fails with B's 403.
func TestPerformKnock(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		r := newRoomOn(t, b)
		r.state(spec.MRoomJoinRules, map[string]string{"join_rule": spec.Knock})
		r.state(spec.MRoomName, map[string]string{"name": "knock here"})
		kim := a.createUser(t, "kim")

		res, err := a.fed.API().PerformKnock(ctx, &api.PerformKnockRequest{RoomID: r.RoomID, UserID: kim,
			ServerNames: []string{"127.0.0.1:1"}, Content: json.RawMessage(`{"reason":"let me in"}`)})
		if err != nil || res.KnockedVia != string(b.name) {
			t.Fatalf("knock: %+v %v", res, err)
		}
		for _, n := range []*node{a, b} {
			if m := n.membership(t, r.RoomID, kim); m.Membership != spec.Knock || m.EventID != res.EventID {
				t.Fatalf("kim on %s: %+v", n.name, m)
			}
		}
		stored := mustEvent(t, a, r.RoomID, res.EventID)
		var unsigned struct {
			KnockRoomState []gomatrixserverlib.InviteStrippedState `json:"knock_room_state"`
		}
		if err = json.Unmarshal(stored.Unsigned(), &unsigned); err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, st := range unsigned.KnockRoomState {
			have[st.Type()] = true
		}
		if !have[spec.MRoomCreate] || !have[spec.MRoomJoinRules] || !have[spec.MRoomName] {
			t.Fatalf("knock_room_state on A: %s", stored.Unsigned())
		}
		if !json.Valid(stored.Content()) || string(stored.Content()) != `{"membership":"knock","reason":"let me in"}` {
			t.Fatalf("knock content: %s", stored.Content())
		}

		other := "@other:" + string(a.name)
		_, err = a.client.MakeKnock(ctx, a.name, b.name, r.RoomID, other, nil)
		wantHTTP(t, err, http.StatusBadRequest, "M_MISSING_PARAM")
		_, err = a.client.MakeKnock(ctx, a.name, b.name, r.RoomID, other, []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV6})
		wantHTTP(t, err, http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION")
		_, err = a.client.MakeKnock(ctx, a.name, b.name, "!nope:"+string(b.name), other, []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV10})
		wantHTTP(t, err, http.StatusNotFound, "M_NOT_FOUND")
		public := newRoomOn(t, b)
		_, err = a.client.MakeKnock(ctx, a.name, b.name, public.RoomID, other, []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV10})
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
		_, err = a.fed.API().PerformKnock(ctx, &api.PerformKnockRequest{RoomID: public.RoomID, UserID: kim})
		wantMatrixErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
		// make_knock for a user of another server: 403.
		_, err = a.client.MakeKnock(ctx, a.name, b.name, r.RoomID, "@mallory:"+string(b.name), []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV10})
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestKnockRoomStateSignatures: the resident server's send_knock answer is altered on its
// way out: the name event's content changed (its content hash fails), the join rules
// event's signature replaced by another (valid base64, wrong bytes) and a stripped-only
// topic entry added. The knock on A keeps only the create event, the one entry that is
// still properly signed; without the check all four reached A's knock_room_state.
func TestKnockRoomStateSignatures(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomOn(t, b)
		r.state(spec.MRoomJoinRules, map[string]string{"join_rule": spec.Knock})
		r.state(spec.MRoomName, map[string]string{"name": "knock here"})
		inner := *b.handler.Load()
		var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if !strings.Contains(req.URL.Path, "/send_knock/") {
				inner.ServeHTTP(w, req)
				return
			}
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, req)
			w.WriteHeader(rec.Code)
			_, _ = w.Write(tamperKnockState(t, rec.Body.Bytes(), b.name)) // a failed write fails the knock, which the test reports
		})
		b.handler.Store(&h)
		kim := a.createUser(t, "kim")

		res, err := a.fed.API().PerformKnock(context.Background(), &api.PerformKnockRequest{RoomID: r.RoomID, UserID: kim})
		if err != nil {
			t.Fatalf("knock: %v", err)
		}
		stored := mustEvent(t, a, r.RoomID, res.EventID)
		var unsigned struct {
			KnockRoomState []gomatrixserverlib.InviteStrippedState `json:"knock_room_state"`
		}
		if err = json.Unmarshal(stored.Unsigned(), &unsigned); err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, st := range unsigned.KnockRoomState {
			types = append(types, st.Type())
		}
		if !slices.Equal(types, []string{spec.MRoomCreate}) {
			t.Fatalf("knock_room_state on A: %s", stored.Unsigned())
		}
	})
}

// tamperKnockState alters a send_knock answer as TestKnockRoomStateSignatures describes.
func tamperKnockState(t *testing.T, body []byte, server spec.ServerName) []byte {
	t.Helper()
	var res struct {
		KnockRoomState []map[string]any `json:"knock_room_state"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		t.Errorf("send_knock answer: %v", err)
		return body
	}
	for _, ev := range res.KnockRoomState {
		switch ev["type"] {
		case spec.MRoomName:
			ev["content"] = map[string]string{"name": "forged"}
		case spec.MRoomJoinRules:
			sigs := ev["signatures"].(map[string]any)[string(server)].(map[string]any)
			for k := range sigs {
				sigs[k] = spec.Base64Bytes(make([]byte, ed25519.SignatureSize)).Encode()
			}
		}
	}
	res.KnockRoomState = append(res.KnockRoomState, map[string]any{"type": spec.MRoomTopic, "state_key": "", "sender": "@x:" + string(server), "content": map[string]string{"topic": "unsigned"}})
	out, err := json.Marshal(res)
	if err != nil {
		t.Error(err)
	}
	return out
}
