package routing

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// maxHierarchyChildren bounds the children one /hierarchy answer describes.
const maxHierarchyChildren = 1000

const spaceChildType = "m.space.child"

// hierarchyChunk is a room of a federation /hierarchy answer (the spec's
// SpaceHierarchyParentRoom and SpaceHierarchyChildRoomsChunk).
type hierarchyChunk struct {
	rsapi.RoomSummary
	ChildrenState  []hierarchyChildState `json:"children_state"`
	AllowedRoomIDs []string              `json:"allowed_room_ids,omitempty"`
	RoomVersion    string                `json:"room_version,omitempty"`
	Encryption     string                `json:"encryption,omitempty"`
}

// hierarchyChildState is an m.space.child event, stripped, with its timestamp.
type hierarchyChildState struct {
	Content        json.RawMessage `json:"content"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Sender         string          `json:"sender"`
	StateKey       string          `json:"state_key"`
	Type           string          `json:"type"`
}

// hierarchyRoom is a local room as /hierarchy describes it, with whether the requesting
// server could peek into or join it.
type hierarchyRoom struct {
	chunk      hierarchyChunk
	children   []string
	accessible bool
}

// Hierarchy is GET /_matrix/federation/v1/hierarchy/{roomID}?suggested_only=: the room
// and its m.space.child rooms this server knows (not paged, not walked deeper). A child
// the requesting server could neither peek into nor join (not public, knock, restricted or
// world readable, and none of its users joined or invited) is only named in
// inaccessible_children; children this server does not know are left out. A root this
// server does not know, or that the requesting server could not see or is denied by the
// room's ACL, is 404.
func (rt *Routing) Hierarchy(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomID"]
	suggestedOnly := r.URL.Query().Get("suggested_only") == "true"
	notFound := matrixerr.NotFound("unknown room")
	if internal.RoomACL(ctx, rt.Rooms, roomID, req.Origin()) != nil {
		return httputil.Response{}, notFound
	}
	root, err := rt.hierarchyRoom(ctx, roomID, req.Origin(), suggestedOnly)
	if err != nil {
		return httputil.Response{}, err
	}
	if root == nil || !root.accessible {
		return httputil.Response{}, notFound
	}
	res := struct {
		Room                 hierarchyChunk   `json:"room"`
		Children             []hierarchyChunk `json:"children"`
		InaccessibleChildren []string         `json:"inaccessible_children"`
	}{Room: root.chunk, Children: []hierarchyChunk{}, InaccessibleChildren: []string{}}
	for _, id := range root.children[:min(len(root.children), maxHierarchyChildren)] {
		child, err := rt.hierarchyRoom(ctx, id, req.Origin(), suggestedOnly)
		switch {
		case err != nil:
			return httputil.Response{}, err
		case child == nil:
		case child.accessible && internal.RoomACL(ctx, rt.Rooms, id, req.Origin()) == nil:
			res.Children = append(res.Children, child.chunk)
		default:
			res.InaccessibleChildren = append(res.InaccessibleChildren, id)
		}
	}
	return httputil.OK(res), nil
}

// hierarchyRoom describes a local room for origin; nil when this server does not know it.
// children are the room IDs of its m.space.child events with a via (only suggested ones
// when suggestedOnly).
func (rt *Routing) hierarchyRoom(ctx context.Context, roomID string, origin spec.ServerName, suggestedOnly bool) (*hierarchyRoom, error) {
	sums, err := rt.Directory.QueryRoomSummaries(ctx, &rsapi.QueryRoomSummariesRequest{RoomIDs: []string{roomID}})
	if err != nil || len(sums.Rooms) == 0 {
		return nil, err
	}
	st, err := rt.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID,
		Tuples: []rsapi.StateKeyTuple{{EventType: spec.MRoomJoinRules}, {EventType: "m.room.encryption"}}, Types: []string{spaceChildType}})
	if err != nil || !st.RoomExists {
		return nil, err
	}
	out := &hierarchyRoom{chunk: hierarchyChunk{RoomSummary: sums.Rooms[0], ChildrenState: []hierarchyChildState{}, RoomVersion: st.RoomVersion}}
	for _, ev := range st.StateEvents {
		switch ev.Type() {
		case spec.MRoomJoinRules:
			out.chunk.AllowedRoomIDs = rsapi.ParseJoinRule(ev.Content()).AllowedRooms
		case "m.room.encryption":
			var c struct {
				Algorithm string `json:"algorithm"`
			}
			if json.Unmarshal(ev.Content(), &c) == nil {
				out.chunk.Encryption = c.Algorithm
			}
		case spaceChildType:
			var c struct {
				Via       []string `json:"via"`
				Suggested bool     `json:"suggested"`
			}
			if json.Unmarshal(ev.Content(), &c) != nil || len(c.Via) == 0 || ev.StateKey() == nil {
				continue
			}
			out.chunk.ChildrenState = append(out.chunk.ChildrenState, hierarchyChildState{Content: ev.Content(),
				OriginServerTS: int64(ev.OriginServerTS()), Sender: string(ev.SenderID()), StateKey: *ev.StateKey(), Type: spaceChildType})
			if !suggestedOnly || c.Suggested {
				out.children = append(out.children, *ev.StateKey())
			}
		}
	}
	if out.chunk.WorldReadable || slices.Contains([]string{spec.Public, spec.Knock, spec.Restricted, spec.KnockRestricted}, out.chunk.JoinRule) {
		out.accessible = true
		return out, nil
	}
	members, err := rt.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Types: []string{spec.MRoomMember}})
	if err != nil {
		return nil, err
	}
	for _, e := range members.StateEvents {
		uid, err := spec.NewUserID(*e.StateKey(), true)
		if m, _ := e.Membership(); err == nil && uid.Domain() == origin && (m == spec.Join || m == spec.Invite) {
			out.accessible = true
			break
		}
	}
	return out, nil
}
