package federationapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// call makes a federation request from one node to another, signed with from's key, and
// decodes the answer into out. A []byte body is sent as the JSON it holds.
func call(t *testing.T, from, to *node, method, path string, body, out any) error {
	t.Helper()
	fr := fclient.NewFederationRequest(method, from.name, to.name, path)
	if raw, ok := body.([]byte); ok {
		body = json.RawMessage(raw)
	}
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(from.name, from.keyID, from.key); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	return from.client.DoRequestAndParseResponse(context.Background(), req, out)
}

func memberPath(endpoint, roomID, id string) string {
	return "/_matrix/federation/" + endpoint + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(id)
}

// wantRefs checks that a template's prev_events or auth_events are [id, {"sha256": hash}]
// pairs naming events of the room, as room versions 1 and 2 have them, and returns the IDs.
func wantRefs(t *testing.T, b *node, roomID string, raw json.RawMessage) []string {
	t.Helper()
	var pairs [][]json.RawMessage
	if err := json.Unmarshal(raw, &pairs); err != nil || len(pairs) == 0 {
		t.Fatalf("want [id, hashes] pairs, got %s", raw)
	}
	var ids []string
	for _, p := range pairs {
		var id string
		var hashes struct {
			SHA256 spec.Base64Bytes `json:"sha256"`
		}
		if len(p) != 2 || json.Unmarshal(p[0], &id) != nil || json.Unmarshal(p[1], &hashes) != nil || len(hashes.SHA256) != 32 {
			t.Fatalf("want an [id, {sha256}] pair, got %s", raw)
		}
		mustEvent(t, b, roomID, id)
		ids = append(ids, id)
	}
	return ids
}

// joinFromTemplate asks b for a join template for user (make_join), checks its v1 format
// and builds the join on it, signed by a, as a remote server does.
func joinFromTemplate(t *testing.T, a, b *node, r *room, user string) gomatrixserverlib.PDU {
	t.Helper()
	path := memberPath("v1/make_join", r.RoomID, user) + "?ver=1&ver=2"
	var raw struct {
		Event struct {
			PrevEvents json.RawMessage `json:"prev_events"`
			AuthEvents json.RawMessage `json:"auth_events"`
		} `json:"event"`
	}
	if err := call(t, a, b, http.MethodGet, path, nil, &raw); err != nil {
		t.Fatalf("make_join: %v", err)
	}
	if prev := wantRefs(t, b, r.RoomID, raw.Event.PrevEvents); !slices.Equal(prev, []string{r.last.EventID()}) {
		t.Fatalf("prev_events %v, want the room's last event %s", prev, r.last.EventID())
	}
	if auth := wantRefs(t, b, r.RoomID, raw.Event.AuthEvents); len(auth) < 3 {
		t.Fatalf("auth_events %v: want create, power levels and join rules", auth)
	}
	var mj fclient.RespMakeJoin
	if err := call(t, a, b, http.MethodGet, path, nil, &mj); err != nil {
		t.Fatalf("make_join: %v", err)
	}
	ev, err := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion).NewEventBuilderFromProtoEvent(&mj.JoinEvent).Build(time.Now(), a.name, a.keyID, a.key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestV1RoomJoinsAndV1Endpoints: in rooms of versions 1 and 2, make_join's template names
// its prev_events and auth_events as [id, {hashes}] pairs; joins built on it pass through
// the v1 send_join (answer [200, {...}]) and v2 send_join; a join with a bad signature is
// refused with 403; the v1 send_leave answers [200, {}]; event_auth gives an event's auth
// chain.
func TestV1RoomJoinsAndV1Endpoints(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		for _, version := range []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2} {
			t.Run("v"+string(version), func(t *testing.T) {
				r := newRoomVersionOn(t, b, version)
				carol, dave := "@carol:"+string(a.name), "@dave:"+string(a.name)

				join := joinFromTemplate(t, a, b, r, carol)
				var v1 []json.RawMessage
				if err := call(t, a, b, http.MethodPut, memberPath("v1/send_join", r.RoomID, join.EventID()), join.JSON(), &v1); err != nil {
					t.Fatalf("v1 send_join: %v", err)
				}
				var sj fclient.RespSendJoin
				if len(v1) != 2 || string(v1[0]) != "200" || json.Unmarshal(v1[1], &sj) != nil || len(sj.StateEvents) == 0 || len(sj.AuthEvents) == 0 {
					t.Fatalf("v1 send_join answer: %s", v1)
				}
				if m := b.membership(t, r.RoomID, carol); m.Membership != spec.Join || m.EventID != join.EventID() {
					t.Fatalf("carol after the v1 send_join: %+v", m)
				}
				r.last = join

				join2 := joinFromTemplate(t, a, b, r, dave)
				if err := call(t, a, b, http.MethodPut, memberPath("v2/send_join", r.RoomID, join2.EventID()), join2.JSON(), &sj); err != nil {
					t.Fatalf("v2 send_join: %v", err)
				}
				if m := b.membership(t, r.RoomID, dave); m.Membership != spec.Join {
					t.Fatalf("dave after the v2 send_join: %+v", m)
				}
				r.last = join2

				// Signed with a key that is not a's: 403.
				_, other, _ := ed25519.GenerateKey(nil)
				eve := "@eve:" + string(a.name)
				var mj fclient.RespMakeJoin
				if err := call(t, a, b, http.MethodGet, memberPath("v1/make_join", r.RoomID, eve)+"?ver="+string(version), nil, &mj); err != nil {
					t.Fatal(err)
				}
				forged, err := gomatrixserverlib.MustGetRoomVersion(version).NewEventBuilderFromProtoEvent(&mj.JoinEvent).Build(time.Now(), a.name, a.keyID, other)
				if err != nil {
					t.Fatal(err)
				}
				err = call(t, a, b, http.MethodPut, memberPath("v1/send_join", r.RoomID, forged.EventID()), forged.JSON(), &v1)
				wantHTTP(t, err, 403, "M_FORBIDDEN")

				// carol leaves through the v1 send_leave.
				var ml fclient.RespMakeLeave
				if err = call(t, a, b, http.MethodGet, memberPath("v1/make_leave", r.RoomID, carol), nil, &ml); err != nil {
					t.Fatalf("make_leave: %v", err)
				}
				leave, err := gomatrixserverlib.MustGetRoomVersion(version).NewEventBuilderFromProtoEvent(&ml.LeaveEvent).Build(time.Now(), a.name, a.keyID, a.key)
				if err != nil {
					t.Fatal(err)
				}
				if err = call(t, a, b, http.MethodPut, memberPath("v1/send_leave", r.RoomID, leave.EventID()), leave.JSON(), &v1); err != nil {
					t.Fatalf("v1 send_leave: %v", err)
				}
				if len(v1) != 2 || string(v1[0]) != "200" || string(v1[1]) != "{}" {
					t.Fatalf("v1 send_leave answer: %s", v1)
				}
				if m := b.membership(t, r.RoomID, carol); m.Membership != spec.Leave || m.EventID != leave.EventID() {
					t.Fatalf("carol after the v1 send_leave: %+v", m)
				}

				// The auth chain of dave's join: the room's create, alice's join, power levels
				// and join rules.
				var ea fclient.RespEventAuth
				if err = call(t, a, b, http.MethodGet, memberPath("v1/event_auth", r.RoomID, join2.EventID()), nil, &ea); err != nil {
					t.Fatalf("event_auth: %v", err)
				}
				var chain []string
				for _, raw := range ea.AuthEvents {
					ev, err := gomatrixserverlib.MustGetRoomVersion(version).NewEventFromTrustedJSON(raw, false)
					if err != nil {
						t.Fatal(err)
					}
					chain = append(chain, ev.EventID())
				}
				for _, e := range r.auth {
					if !slices.Contains(chain, e.EventID()) {
						t.Fatalf("auth chain %v lacks %s", chain, e.EventID())
					}
				}
				err = call(t, a, b, http.MethodGet, memberPath("v1/event_auth", r.RoomID, "$unknown:"+string(b.name)), nil, &ea)
				wantHTTP(t, err, 404, "M_NOT_FOUND")
			})
		}
	})
}

// TestInviteV1: b invites a's user through the deprecated v1 invite, whose body is the
// invite itself (stripped state in its unsigned invite_room_state): a answers [200,
// {"event": ...}] with its signature added and stores the invite. A room a knows in a later
// version needs the v2 API: 400 M_INCOMPATIBLE_ROOM_VERSION.
func TestInviteV1(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomVersionOn(t, b, gomatrixserverlib.RoomVersionV1)
		erin := a.createUser(t, "erin")
		invite := r.next(spec.MRoomMember, roomtest.StateKey(erin), map[string]string{"membership": spec.Invite})
		withState, err := invite.SetUnsigned(map[string]any{"invite_room_state": []any{gomatrixserverlib.NewInviteStrippedState(r.auth[0])}})
		if err != nil {
			t.Fatal(err)
		}
		var v1 []json.RawMessage
		if err = call(t, b, a, http.MethodPut, memberPath("v1/invite", r.RoomID, invite.EventID()), withState.JSON(), &v1); err != nil {
			t.Fatalf("v1 invite: %v", err)
		}
		var res fclient.RespInviteV2
		if len(v1) != 2 || string(v1[0]) != "200" || json.Unmarshal(v1[1], &res) != nil {
			t.Fatalf("v1 invite answer: %s", v1)
		}
		var signed struct {
			Signatures map[spec.ServerName]json.RawMessage `json:"signatures"`
		}
		if err = json.Unmarshal(res.Event, &signed); err != nil || signed.Signatures[a.name] == nil || signed.Signatures[b.name] == nil {
			t.Fatalf("the invite sent back is not signed by both: %s", res.Event)
		}
		if m := a.membership(t, r.RoomID, erin); m.Membership != spec.Invite || m.EventID != invite.EventID() {
			t.Fatalf("erin on A: %+v", m)
		}

		r10 := newRoomOn(t, b)
		copyRoom(t, a, r10)
		invite10 := r10.next(spec.MRoomMember, roomtest.StateKey(erin), map[string]string{"membership": spec.Invite})
		err = call(t, b, a, http.MethodPut, memberPath("v1/invite", r10.RoomID, invite10.EventID()), invite10.JSON(), &v1)
		wantHTTP(t, err, 400, "M_INCOMPATIBLE_ROOM_VERSION")
	})
}

// TestInviteOfUnregisteredUser: an invite over federation of a user of this server who has
// no account yet is accepted and stored, as Synapse does (the spec's /invite has no 404;
// sytest "Banned servers cannot /invite" invites such a user before the ban).
func TestInviteOfUnregisteredUser(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomOn(t, b)
		ghost := "@ghost:" + string(a.name)
		invite := r.next(spec.MRoomMember, roomtest.StateKey(ghost), map[string]string{"membership": spec.Invite})
		body, err := json.Marshal(map[string]any{"event": json.RawMessage(invite.JSON()), "room_version": r.Version, "invite_room_state": []any{}})
		if err != nil {
			t.Fatal(err)
		}
		var res fclient.RespInviteV2
		if err = call(t, b, a, http.MethodPut, memberPath("v2/invite", r.RoomID, invite.EventID()), body, &res); err != nil {
			t.Fatalf("invite of an unregistered user: %v", err)
		}
		if m := a.membership(t, r.RoomID, ghost); m.Membership != spec.Invite || m.EventID != invite.EventID() {
			t.Fatalf("ghost on A: %+v", m)
		}
	})
}
