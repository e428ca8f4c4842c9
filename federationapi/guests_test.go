package federationapi_test

import (
	"context"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/test/roomtest"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// TestGuestsRemovedOnRemoteRevocation: when B's user revokes guest access in a room A is
// in, A's guests leave it (spec "Guest Access"); A's other users stay.
func TestGuestsRemovedOnRemoteRevocation(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		r := newRoomOn(t, b)
		r.state("m.room.guest_access", map[string]string{"guest_access": "can_join"})
		copyRoom(t, a, r)

		guest, member := "@g1:"+string(a.name), "@carol:"+string(a.name)
		for local, kind := range map[string]uapi.AccountType{"g1": uapi.AccountTypeGuest, "carol": uapi.AccountTypeUser} {
			if _, err := a.users.PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: local, Password: "password-" + local, AccountType: kind}); err != nil {
				t.Fatal(err)
			}
		}
		for _, u := range []string{guest, member} {
			res, err := a.input.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: r.RoomID,
				Events: []rsapi.InputRoomEvent{roomtest.Proto(u, spec.MRoomMember, roomtest.StateKey(u), map[string]string{"membership": spec.Join})}}})
			if err != nil || res.Results[0].Err != nil {
				t.Fatalf("%s joins on A: %v %+v", u, err, res)
			}
		}

		revoke := r.next("m.room.guest_access", roomtest.StateKey(""), map[string]string{"guest_access": "forbidden"})
		b.inputAll(t, r.RoomID, revoke)
		if res, err := sendTxn(t, b, a, "revoke", revoke); err != nil || res.PDUs[revoke.EventID()].Error != "" {
			t.Fatalf("send the revocation: %+v %v", res, err)
		}
		// The guest's leave is input before /send answers.
		state, err := a.rs.API().QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: r.RoomID, Types: []string{spec.MRoomMember}})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, ev := range state.StateEvents {
			m, _ := ev.Membership() // the roomserver accepted it, so the content is valid
			got[*ev.StateKey()] = m
		}
		if got[guest] != spec.Leave || got[member] != spec.Join {
			t.Fatalf("after the revocation: guest %q, member %q; want leave and join", got[guest], got[member])
		}
	})
}
