package federationapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

func wantMatrixErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	var merr *matrixerr.Error
	if !errors.As(err, &merr) || merr.Status != status || merr.Code != code {
		t.Fatalf("want %d %s, got %v", status, code, err)
	}
}

func (n *node) membership(t *testing.T, roomID, userID string) *rsapi.QueryMembershipForUserResponse {
	t.Helper()
	m, err := n.rs.API().QueryMembershipForUser(context.Background(), &rsapi.QueryMembershipForUserRequest{RoomID: roomID, UserID: userID})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (n *node) createUser(t *testing.T, localpart string) string {
	t.Helper()
	if _, err := n.users.PerformAccountCreation(context.Background(), &uapi.PerformAccountCreationRequest{Localpart: localpart, Password: "pw-" + localpart + "-123", AccountType: uapi.AccountTypeUser}); err != nil {
		t.Fatal(err)
	}
	return "@" + localpart + ":" + string(n.name)
}

// TestPerformJoinInviteLeave: A's users join B's rooms through A's internal API
// (make_join, send_join, the answer checked and stored), with an unreachable server
// skipped; unknown and invite-only rooms fail with 404 and 403. B invites A's users
// (invite v2): A stores the invite with both signatures and the room's stripped state; one
// invitee joins through the inviter's server, another rejects with make_leave/send_leave.
func TestPerformJoinInviteLeave(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		r := newRoomOn(t, b)
		r.state("m.room.topic", map[string]string{"topic": "on B"})
		r.message("before the join")
		dave := "@dave:" + string(a.name)

		res, err := a.fed.API().PerformJoin(ctx, &api.PerformJoinRequest{RoomID: r.RoomID, UserID: dave,
			ServerNames: []string{"127.0.0.1:1"}, Content: json.RawMessage(`{"displayname":"Dave"}`)})
		if err != nil || res.JoinedVia != string(b.name) {
			t.Fatalf("join: %+v %v", res, err)
		}
		for _, n := range []*node{a, b} {
			if m := n.membership(t, r.RoomID, dave); m.Membership != spec.Join || m.EventID != res.EventID {
				t.Fatalf("dave on %s: %+v", n.name, m)
			}
		}
		cur, err := a.rs.API().QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: r.RoomID, Tuples: []rsapi.StateKeyTuple{{EventType: "m.room.topic"}}})
		if err != nil || len(cur.StateEvents) != 1 || !strings.Contains(string(cur.StateEvents[0].Content()), "on B") {
			t.Fatalf("topic on A: %+v %v", cur, err)
		}
		// B's next message reaches A and builds on the join.
		r.last, r.depth = mustEvent(t, a, r.RoomID, res.EventID), 0
		r.depth = r.last.Depth()
		after := r.message("after the join")
		if tr, err := sendTxn(t, b, a, "pj1", after); err != nil || tr.PDUs[after.EventID()].Error != "" {
			t.Fatalf("send after the join: %+v %v", tr, err)
		}

		// No server knows the room: 404. The room refuses: 403.
		_, err = a.fed.API().PerformJoin(ctx, &api.PerformJoinRequest{RoomID: "!nope:" + string(b.name), UserID: dave})
		wantMatrixErr(t, err, 404, "M_NOT_FOUND")
		_, err = a.fed.API().PerformJoin(ctx, &api.PerformJoinRequest{RoomID: "!nope:127.0.0.1:1", UserID: dave})
		wantMatrixErr(t, err, 404, "M_NOT_FOUND")
		r2 := newRoomOn(t, b)
		r2.state(spec.MRoomJoinRules, map[string]string{"join_rule": "invite"})
		r2.state(spec.MRoomName, map[string]string{"name": "secret room"})
		_, err = a.fed.API().PerformJoin(ctx, &api.PerformJoinRequest{RoomID: r2.RoomID, UserID: dave})
		wantMatrixErr(t, err, 403, "M_FORBIDDEN")

		// B invites erin of A: A stores the invite, signed by both, with stripped state.
		erin := a.createUser(t, "erin")
		inv, err := b.fed.API().PerformInvite(ctx, &api.PerformInviteRequest{RoomID: r2.RoomID, Sender: r2.alice, UserID: erin})
		if err != nil {
			t.Fatalf("invite: %v", err)
		}
		if m := b.membership(t, r2.RoomID, erin); m.Membership != spec.Invite || m.EventID != inv.EventID {
			t.Fatalf("erin on B: %+v", m)
		}
		if m := a.membership(t, r2.RoomID, erin); m.Membership != spec.Invite || m.EventID != inv.EventID {
			t.Fatalf("erin on A: %+v", m)
		}
		stored := mustEvent(t, a, r2.RoomID, inv.EventID)
		var unsigned struct {
			InviteRoomState []gomatrixserverlib.InviteStrippedState `json:"invite_room_state"`
		}
		if err = json.Unmarshal(stored.Unsigned(), &unsigned); err != nil || len(unsigned.InviteRoomState) < 3 {
			t.Fatalf("invite_room_state on A: %s %v", stored.Unsigned(), err)
		}
		for _, signer := range []*node{a, b} {
			if !strings.Contains(string(stored.JSON()), `"`+string(signer.name)+`"`) {
				t.Fatalf("the invite on A is not signed by %s: %s", signer.name, stored.JSON())
			}
		}
		// erin joins through the inviter's server, with no hint.
		if _, err = a.fed.API().PerformJoin(ctx, &api.PerformJoinRequest{RoomID: r2.RoomID, UserID: erin}); err != nil {
			t.Fatalf("invited join: %v", err)
		}
		for _, n := range []*node{a, b} {
			if m := n.membership(t, r2.RoomID, erin); m.Membership != spec.Join {
				t.Fatalf("erin on %s after joining: %+v", n.name, m)
			}
		}

		// frank of A rejects B's invite to a third room A is not in: make_leave, send_leave.
		r3 := newRoomOn(t, b)
		r3.state(spec.MRoomJoinRules, map[string]string{"join_rule": "invite"})
		frank := a.createUser(t, "frank")
		if _, err = b.fed.API().PerformInvite(ctx, &api.PerformInviteRequest{RoomID: r3.RoomID, Sender: r3.alice, UserID: frank}); err != nil {
			t.Fatalf("invite frank: %v", err)
		}
		lv, err := a.fed.API().PerformLeave(ctx, &api.PerformLeaveRequest{RoomID: r3.RoomID, UserID: frank})
		if err != nil {
			t.Fatalf("reject: %v", err)
		}
		for _, n := range []*node{a, b} {
			if m := n.membership(t, r3.RoomID, frank); m.Membership != spec.Leave || m.EventID != lv.EventID {
				t.Fatalf("frank on %s after rejecting: %+v", n.name, m)
			}
		}
		// An invite for a user A has no account for goes through (TestInviteOfUnregisteredUser).
		// A server that cannot be reached: 502.
		if _, err = b.fed.API().PerformInvite(ctx, &api.PerformInviteRequest{RoomID: r3.RoomID, Sender: r3.alice, UserID: "@nobody:" + string(a.name)}); err != nil {
			t.Fatalf("invite of a user without an account: %v", err)
		}
		_, err = b.fed.API().PerformInvite(ctx, &api.PerformInviteRequest{RoomID: r3.RoomID, Sender: r3.alice, UserID: "@nobody:127.0.0.1:1"})
		wantMatrixErr(t, err, 502, "M_UNKNOWN")
		// make_leave for a user of another server: 403.
		_, err = a.client.MakeLeave(ctx, a.name, b.name, r3.RoomID, "@mallory:"+string(b.name))
		wantHTTP(t, err, 403, "M_FORBIDDEN")
	})
}

func mustEvent(t *testing.T, n *node, roomID, eventID string) gomatrixserverlib.PDU {
	t.Helper()
	res, err := n.rs.API().QueryEventsByID(context.Background(), &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{eventID}})
	if err != nil || len(res.Events) != 1 {
		t.Fatalf("event %s on %s: %+v %v", eventID, n.name, res, err)
	}
	return res.Events[0].PDU
}

// TestInviteAnswerWithInvalidJSON: the invitee's server answers an invite to a v10 room
// with the event plus a float, which no event of a v6 or later room may hold: the invite
// fails with 400 M_BAD_JSON (not 502, which is for servers that cannot be reached).
func TestInviteAnswerWithInvalidJSON(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		b := newNode(t, newDSN(), &clock{}, nodeOpts{})
		invitee := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var body struct {
				Event map[string]any `json:"event"`
			}
			if r.Method != http.MethodPut || !strings.HasPrefix(r.URL.Path, "/_matrix/federation/v2/invite/") || json.NewDecoder(r.Body).Decode(&body) != nil {
				http.NotFound(w, r)
				return
			}
			body.Event["bad_val"] = 1.1
			_ = json.NewEncoder(w).Encode(body) // the test fails on the invite's answer if this write fails
		}))
		t.Cleanup(invitee.Close)
		r := newRoomOn(t, b)
		user := "@zed:" + invitee.Listener.Addr().String()
		_, err := b.fed.API().PerformInvite(context.Background(), &api.PerformInviteRequest{RoomID: r.RoomID, Sender: r.alice, UserID: user})
		wantMatrixErr(t, err, 400, "M_BAD_JSON")
	})
}

// TestRejectInviteLocally: when no server takes the leave (the inviting server refuses
// make_leave, or cannot be reached), A rejects its user's invite by itself: the user's
// membership becomes leave, with a leave built on the invite.
func TestRejectInviteLocally(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		grace, heidi := a.createUser(t, "grace"), a.createUser(t, "heidi")
		var rooms []*room
		for _, user := range []string{grace, heidi} {
			r := newRoomOn(t, b)
			r.state(spec.MRoomJoinRules, map[string]string{"join_rule": "invite"})
			if _, err := b.fed.API().PerformInvite(ctx, &api.PerformInviteRequest{RoomID: r.RoomID, Sender: r.alice, UserID: user}); err != nil {
				t.Fatalf("invite %s: %v", user, err)
			}
			rooms = append(rooms, r)
		}
		reject := func(r *room, user string) {
			t.Helper()
			inv := a.membership(t, r.RoomID, user)
			lv, err := a.fed.API().PerformLeave(ctx, &api.PerformLeaveRequest{RoomID: r.RoomID, UserID: user})
			if err != nil {
				t.Fatalf("reject %s's invite: %v", user, err)
			}
			if m := a.membership(t, r.RoomID, user); m.Membership != spec.Leave || m.EventID != lv.EventID {
				t.Fatalf("%s on A after rejecting: %+v", user, m)
			}
			leave := mustEvent(t, a, r.RoomID, lv.EventID)
			if string(leave.SenderID()) != user || len(leave.PrevEventIDs()) != 1 || leave.PrevEventIDs()[0] != inv.EventID {
				t.Fatalf("local leave: %s", leave.JSON())
			}
		}

		refuse := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"no"}`)) // the test sees a failed write as a failed reject
		}))
		b.handler.Store(&refuse)
		reject(rooms[0], grace)
		b.srv.Close()
		reject(rooms[1], heidi)

		// Without an invite there is nothing to reject: the failure stays.
		_, err := a.fed.API().PerformLeave(ctx, &api.PerformLeaveRequest{RoomID: rooms[1].RoomID, UserID: grace})
		wantMatrixErr(t, err, 404, "M_NOT_FOUND")
	})
}

// TestMakeJoinWhenEveryoneLeft: a server whose users have all left a room refuses
// make_join for it with 404, as it can no longer vouch for the room.
func TestMakeJoinWhenEveryoneLeft(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		r := newRoomOn(t, b)
		joiner := "@joiner:" + string(a.name)
		if _, err := a.client.MakeJoin(ctx, a.name, b.name, r.RoomID, joiner); err != nil {
			t.Fatalf("make_join while alice is in the room: %v", err)
		}
		b.inputAll(t, r.RoomID, r.next(spec.MRoomMember, &r.alice, map[string]string{"membership": spec.Leave}))
		_, err := a.client.MakeJoin(ctx, a.name, b.name, r.RoomID, joiner)
		wantHTTP(t, err, http.StatusNotFound, "M_NOT_FOUND")
	})
}

// TestJoinPassesMakeJoinRefusalThrough: a room server's 400 with a Matrix error code for
// make_join reaches the client with that code, not as "no server could be reached".
func TestJoinPassesMakeJoinRefusalThrough(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	a := newNode(t, "file:"+t.TempDir()+"/fed.db", clk, nodeOpts{})
	roomServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"errcode":"M_TEST_ERROR_CODE","error":"denied!"}`)) // a failed write fails the test's join differently
	}))
	defer roomServer.Close()
	server := roomServer.Listener.Addr().String()
	_, err := a.fed.API().PerformJoin(context.Background(), &api.PerformJoinRequest{RoomID: "!room:" + server, UserID: "@ivan:" + string(a.name), ServerNames: []string{server}})
	wantMatrixErr(t, err, http.StatusBadRequest, "M_TEST_ERROR_CODE")
}
