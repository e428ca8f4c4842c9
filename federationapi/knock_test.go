package federationapi_test

import (
	"context"
	"encoding/json"
	"net/http"
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
