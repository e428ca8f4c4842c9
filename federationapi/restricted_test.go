package federationapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/api"
)

// restrictedTo is join rules content restricted to members of allowed.
func restrictedTo(allowed string) map[string]any {
	return map[string]any{"join_rule": spec.Restricted, "allow": []map[string]string{{"type": "m.room_membership", "room_id": allowed}}}
}

// TestRestrictedJoinThroughResident: a user of A who is in B's space joins B's room
// restricted to that space through B: B's make_join names alice (B's user with the power
// to invite) in join_authorised_via_users_server and B signs the join at send_join, which
// both servers then hold. A user in none of the allowed rooms is refused (403); a room
// restricted to a room B is not in is 400 M_UNABLE_TO_AUTHORISE_JOIN; a room where no user
// of B may invite is 400 M_UNABLE_TO_GRANT_JOIN; a send_join naming B's authoriser for a
// user B does not authorise is 403.
func TestRestrictedJoinThroughResident(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		space := newRoomOn(t, b)
		r := newRoomOn(t, b)
		r.state(spec.MRoomJoinRules, restrictedTo(space.RoomID))
		dave, erin := a.createUser(t, "dave"), a.createUser(t, "erin")
		if _, err := a.fed.API().PerformJoin(ctx, &api.PerformJoinRequest{RoomID: space.RoomID, UserID: dave}); err != nil {
			t.Fatalf("join the space: %v", err)
		}

		res, err := a.fed.API().PerformJoin(ctx, &api.PerformJoinRequest{RoomID: r.RoomID, UserID: dave})
		if err != nil {
			t.Fatalf("restricted join: %v", err)
		}
		for _, n := range []*node{a, b} {
			if m := n.membership(t, r.RoomID, dave); m.Membership != spec.Join || m.EventID != res.EventID {
				t.Fatalf("dave on %s: %+v", n.name, m)
			}
		}
		join := mustEvent(t, b, r.RoomID, res.EventID)
		var content struct {
			Via string `json:"join_authorised_via_users_server"`
		}
		if err = json.Unmarshal(join.Content(), &content); err != nil || content.Via != r.alice {
			t.Fatalf("join content: %s", join.Content())
		}
		var sigs struct {
			Signatures map[string]json.RawMessage `json:"signatures"`
		}
		if err = json.Unmarshal(join.JSON(), &sigs); err != nil || sigs.Signatures[string(b.name)] == nil || sigs.Signatures[string(a.name)] == nil {
			t.Fatalf("the join is not signed by the authorising server: %s", join.JSON())
		}

		_, err = a.fed.API().PerformJoin(ctx, &api.PerformJoinRequest{RoomID: r.RoomID, UserID: erin})
		wantMatrixErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
		_, err = a.client.MakeJoin(ctx, a.name, b.name, r.RoomID, erin)
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")

		elsewhere := newRoomOn(t, b)
		elsewhere.state(spec.MRoomJoinRules, restrictedTo("!unknown:"+string(a.name)))
		_, err = a.client.MakeJoin(ctx, a.name, b.name, elsewhere.RoomID, dave)
		wantHTTP(t, err, http.StatusBadRequest, "M_UNABLE_TO_AUTHORISE_JOIN")

		powerless := newRoomOn(t, b)
		powerless.state(spec.MRoomJoinRules, restrictedTo(space.RoomID))
		powerless.state(spec.MRoomPowerLevels, map[string]any{"users": map[string]int{powerless.alice: 50}, "invite": 100})
		_, err = a.client.MakeJoin(ctx, a.name, b.name, powerless.RoomID, dave)
		wantHTTP(t, err, http.StatusBadRequest, "M_UNABLE_TO_GRANT_JOIN")

		// erin's server builds a join naming alice itself: B does not sign it.
		mj, err := a.client.MakeJoin(ctx, a.name, b.name, space.RoomID, erin)
		if err != nil {
			t.Fatal(err)
		}
		proto := mj.JoinEvent
		proto.RoomID = r.RoomID
		if err = proto.SetContent(map[string]string{"membership": spec.Join, "join_authorised_via_users_server": r.alice}); err != nil {
			t.Fatal(err)
		}
		proto.AuthEvents = []string{r.auth[0].EventID(), r.auth[1].EventID(), r.auth[2].EventID()}
		proto.PrevEvents = []string{r.last.EventID()}
		ev, err := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion).NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), a.name, a.keyID, a.key)
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.client.SendJoin(ctx, a.name, b.name, ev)
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
}
