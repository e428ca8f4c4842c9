package federationapi_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// child adds room childID to r as an m.space.child with via.
func (r *room) child(t *testing.T, childID string, content map[string]any) {
	t.Helper()
	r.b.inputAll(t, r.RoomID, r.next("m.space.child", roomtest.StateKey(childID), content))
}

// TestFederationHierarchy: B answers GET /hierarchy for its space with the space and its
// children A may see (public, restricted with allowed_room_ids), names an invite-only
// child in inaccessible_children and leaves out a child it does not know and one whose
// m.space.child has no via; suggested_only keeps suggested children; an invite-only root is
// 404. A's QueryRoomHierarchy passes over a server that cannot answer.
func TestFederationHierarchy(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		space, public, restricted, private := newRoomOn(t, b), newRoomOn(t, b), newRoomOn(t, b), newRoomOn(t, b)
		restricted.state(spec.MRoomJoinRules, restrictedTo(space.RoomID))
		private.state(spec.MRoomJoinRules, map[string]string{"join_rule": spec.Invite})
		private.state(spec.MRoomHistoryVisibility, map[string]string{"history_visibility": "shared"})
		via := []string{string(b.name)}
		space.child(t, public.RoomID, map[string]any{"via": via, "suggested": true})
		space.child(t, restricted.RoomID, map[string]any{"via": via})
		space.child(t, private.RoomID, map[string]any{"via": via})
		space.child(t, "!unknown:"+string(b.name), map[string]any{"via": via})
		space.child(t, "!novia:"+string(b.name), map[string]any{})

		res, err := a.fed.API().QueryRoomHierarchy(ctx, &api.QueryRoomHierarchyRequest{RoomID: space.RoomID, Servers: []string{"127.0.0.1:1", string(b.name)}})
		if err != nil {
			t.Fatalf("hierarchy: %v", err)
		}
		if res.Room.RoomID != space.RoomID || len(res.Room.ChildrenState) != 4 {
			t.Fatalf("room: %+v", res.Room)
		}
		var children []string
		for _, c := range res.Children {
			children = append(children, c.RoomID)
			if c.RoomID == restricted.RoomID && !slices.Equal(c.AllowedRoomIDs, []string{space.RoomID}) {
				t.Fatalf("restricted child: %+v", c)
			}
		}
		slices.Sort(children)
		want := []string{public.RoomID, restricted.RoomID}
		slices.Sort(want)
		if !slices.Equal(children, want) || !slices.Equal(res.InaccessibleChildren, []string{private.RoomID}) {
			t.Fatalf("children %v inaccessible %v", children, res.InaccessibleChildren)
		}
		sugg, err := a.client.RoomHierarchy(ctx, a.name, b.name, space.RoomID, true)
		if err != nil || len(sugg.Children) != 1 || sugg.Children[0].RoomID != public.RoomID {
			t.Fatalf("suggested only: %+v %v", sugg, err)
		}
		// (fclient asks the unstable path again after a 404, which is what it reports.)
		var herr gomatrix.HTTPError
		if _, err = a.client.RoomHierarchy(ctx, a.name, b.name, private.RoomID, false); !errors.As(err, &herr) || herr.Code != http.StatusNotFound {
			t.Fatalf("invite-only root: %v", err)
		}
		_, err = a.fed.API().QueryRoomHierarchy(ctx, &api.QueryRoomHierarchyRequest{RoomID: private.RoomID, Servers: []string{string(b.name)}})
		wantMatrixErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
	})
}
