package routing

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/roomalias"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Limits of GET /rooms/{roomId}/hierarchy.
const (
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 200
	maxHierarchyDepth     = 10
	// maxHierarchyRooms bounds the rooms one walk visits, whatever the space's size.
	maxHierarchyRooms = 2000
)

const (
	spaceChildType = "m.space.child"
	encryptionType = "m.room.encryption"
)

// roomAccess is what decides whether a user may learn about a room without being in it.
type roomAccess struct {
	summary    rsapi.RoomSummary
	version    string
	membership string
	allow      []string
	encryption string
	children   []rsapi.Event
}

// loadRoom reads a local room's summary and the state the access rules and the answers
// need; nil when this server does not know the room.
func (rm *Rooms) loadRoom(ctx context.Context, roomID, userID string, withChildren bool) (*roomAccess, error) {
	sums, err := rm.RSAPI.QueryRoomSummaries(ctx, &rsapi.QueryRoomSummariesRequest{RoomIDs: []string{roomID}})
	if err != nil {
		return nil, err
	}
	if len(sums.Rooms) == 0 {
		return nil, nil
	}
	req := &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: []rsapi.StateKeyTuple{{EventType: spec.MRoomJoinRules}, {EventType: encryptionType}}}
	if userID != "" {
		req.Tuples = append(req.Tuples, rsapi.StateKeyTuple{EventType: spec.MRoomMember, StateKey: userID})
	}
	if withChildren {
		req.Types = []string{spaceChildType}
	}
	st, err := rm.RSAPI.QueryCurrentState(ctx, req)
	if err != nil {
		return nil, err
	}
	if !st.RoomExists {
		return nil, nil
	}
	a := &roomAccess{summary: sums.Rooms[0], version: st.RoomVersion}
	for _, ev := range st.StateEvents {
		var c struct {
			Allow []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			} `json:"allow"`
			Algorithm  string `json:"algorithm"`
			Membership string `json:"membership"`
		}
		if json.Unmarshal(ev.Content(), &c) != nil {
			continue
		}
		switch ev.Type() {
		case spec.MRoomJoinRules:
			for _, al := range c.Allow {
				if al.Type == "m.room_membership" && al.RoomID != "" {
					a.allow = append(a.allow, al.RoomID)
				}
			}
		case encryptionType:
			a.encryption = c.Algorithm
		case spec.MRoomMember:
			a.membership = c.Membership
		case spaceChildType:
			a.children = append(a.children, ev)
		}
	}
	return a, nil
}

// accessible reports whether userID ("" for a guest without a token) may learn about the
// room: members and invitees, anyone for rooms one may join or knock on freely or read,
// and, for restricted rooms, members of an allowed room.
func (rm *Rooms) accessible(ctx context.Context, a *roomAccess, userID string) (bool, error) {
	if a.membership == spec.Join || a.membership == spec.Invite || a.summary.WorldReadable {
		return true, nil
	}
	switch a.summary.JoinRule {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true, nil
	case spec.Restricted:
	default:
		return false, nil
	}
	if userID == "" {
		return false, nil
	}
	for _, roomID := range a.allow {
		m, err := rm.RSAPI.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: roomID, UserID: userID})
		if err != nil {
			return false, err
		}
		if m.Membership == spec.Join {
			return true, nil
		}
	}
	return false, nil
}

// roomSummaryResponse is the body of GET /room_summary (MSC3266).
type roomSummaryResponse struct {
	rsapi.RoomSummary
	Membership     string   `json:"membership,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
}

// RoomSummary is GET /v1/room_summary/{roomIdOrAlias}: a local room's summary for anyone
// who may learn about it, 404 M_NOT_FOUND for unknown rooms and for the others alike, so
// that the answer does not tell that a private room exists. A token is optional.
func (rm *Rooms) RoomSummary(r *http.Request) (httputil.Response, error) {
	userID := ""
	if r.Header.Get("Authorization") != "" || r.URL.Query().Get("access_token") != "" {
		return httputil.Authenticated(DeviceLookup(rm.UserAPI), func(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
			return rm.roomSummary(r, dev.UserID)
		})(r)
	}
	return rm.roomSummary(r, userID)
}

func (rm *Rooms) roomSummary(r *http.Request, userID string) (httputil.Response, error) {
	target := httputil.Vars(r)["roomIDOrAlias"]
	roomID := target
	if len(target) > 0 && target[0] == '#' {
		a, err := roomalias.Parse(target)
		if err != nil {
			return httputil.Response{}, matrixerr.InvalidParam("invalid room alias")
		}
		if roomID, _, err = rm.resolveAlias(r.Context(), a); err != nil {
			return httputil.Response{}, err
		}
	} else if _, err := spec.NewRoomID(target); err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("invalid room ID or alias")
	}
	a, err := rm.loadRoom(r.Context(), roomID, userID, false)
	if err != nil {
		return httputil.Response{}, err
	}
	notFound := matrixerr.NotFound("room not found")
	if a == nil {
		return httputil.Response{}, notFound
	}
	ok, err := rm.accessible(r.Context(), a, userID)
	if err != nil {
		return httputil.Response{}, err
	}
	if !ok {
		return httputil.Response{}, notFound
	}
	res := roomSummaryResponse{RoomSummary: a.summary, RoomVersion: a.version, Encryption: a.encryption, AllowedRoomIDs: a.allow}
	if userID != "" {
		res.Membership = a.membership
		if res.Membership == "" {
			res.Membership = spec.Leave
		}
	}
	return httputil.OK(res), nil
}

// hierarchyRoom is one room of GET /hierarchy (the spec's SpaceHierarchyRoomsChunk).
type hierarchyRoom struct {
	rsapi.RoomSummary
	ChildrenState  []childState `json:"children_state"`
	AllowedRoomIDs []string     `json:"allowed_room_ids,omitempty"`
	RoomVersion    string       `json:"room_version,omitempty"`
	Encryption     string       `json:"encryption,omitempty"`
}

// childState is an m.space.child event in the stripped form with its timestamp.
type childState struct {
	Content        json.RawMessage `json:"content"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Sender         string          `json:"sender"`
	StateKey       string          `json:"state_key"`
	Type           string          `json:"type"`
}

// spaceChild is a valid m.space.child of a room.
type spaceChild struct {
	roomID    string
	via       []string
	order     string
	ts        int64
	suggested bool
	event     childState
}

// localChildState turns a room's m.space.child events into their stripped form.
func localChildState(evs []rsapi.Event) []childState {
	out := make([]childState, 0, len(evs))
	for _, ev := range evs {
		if sk := ev.StateKey(); sk != nil {
			out = append(out, childState{Content: ev.Content(), OriginServerTS: int64(ev.OriginServerTS()), Sender: string(ev.SenderID()), StateKey: *sk, Type: spaceChildType})
		}
	}
	return out
}

// validChildren are the room's m.space.child events with a non-empty via, in the spec's
// order: by order (valid ones first), then timestamp, then room ID.
func validChildren(evs []childState) []spaceChild {
	var out []spaceChild
	for _, ev := range evs {
		var c struct {
			Via       []string `json:"via"`
			Order     any      `json:"order"`
			Suggested any      `json:"suggested"`
		}
		if ev.Type != spaceChildType || json.Unmarshal(ev.Content, &c) != nil || len(c.Via) == 0 {
			continue
		}
		order, _ := c.Order.(string)
		if len(order) > 50 {
			order = ""
		}
		for _, r := range order {
			if r < 0x20 || r > 0x7e {
				order = ""
				break
			}
		}
		suggested, _ := c.Suggested.(bool)
		out = append(out, spaceChild{roomID: ev.StateKey, via: c.Via, order: order, ts: ev.OriginServerTS, suggested: suggested, event: ev})
	}
	slices.SortFunc(out, func(a, b spaceChild) int {
		switch {
		case a.order != "" && b.order == "":
			return -1
		case a.order == "" && b.order != "":
			return 1
		case a.order != b.order:
			if a.order < b.order {
				return -1
			}
			return 1
		case a.ts != b.ts:
			if a.ts < b.ts {
				return -1
			}
			return 1
		case a.roomID < b.roomID:
			return -1
		case a.roomID > b.roomID:
			return 1
		}
		return 0
	})
	return out
}

// Hierarchy is GET /v1/rooms/{roomId}/hierarchy: a depth-first walk of the space's rooms
// the user may learn about, the root first (403 if the user may not see the root); rooms
// this server is not in are described by the servers their m.space.child events name.
// from is an offset into the walk, which is repeated for each page.
func (rm *Rooms) Hierarchy(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	rootID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	q := r.URL.Query()
	num := func(name string, def, maxV int) (int, error) {
		s := q.Get(name)
		if s == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, matrixerr.InvalidParam(name + " must be a non-negative integer")
		}
		return int(min(n, int64(maxV))), nil
	}
	limit, err := num("limit", defaultHierarchyLimit, maxHierarchyLimit)
	if err != nil {
		return httputil.Response{}, err
	}
	if limit == 0 {
		limit = defaultHierarchyLimit
	}
	depth, err := num("max_depth", maxHierarchyDepth, maxHierarchyDepth)
	if err != nil {
		return httputil.Response{}, err
	}
	from, err := num("from", 0, maxHierarchyRooms)
	if err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("from is not a valid token")
	}
	suggestedOnly := false
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		return httputil.Response{}, matrixerr.InvalidParam("suggested_only must be true or false")
	}
	root, err := rm.loadRoom(r.Context(), rootID, dev.UserID, true)
	if err != nil {
		return httputil.Response{}, err
	}
	if root == nil {
		return httputil.Response{}, matrixerr.Forbidden("you may not see this room")
	}
	if ok, err := rm.accessible(r.Context(), root, dev.UserID); err != nil || !ok {
		if err != nil {
			return httputil.Response{}, err
		}
		return httputil.Response{}, matrixerr.Forbidden("you may not see this room")
	}
	w := &hierarchyWalk{rm: rm, userID: dev.UserID, suggestedOnly: suggestedOnly, maxDepth: depth, want: from + limit, seen: map[string]bool{rootID: true},
		remote: map[string]fclient.RoomHierarchyRoom{}, inaccessible: map[string]bool{}}
	if err = w.visit(r.Context(), localHierarchyRoom(root), 0); err != nil {
		return httputil.Response{}, err
	}
	res := struct {
		Rooms     []hierarchyRoom `json:"rooms"`
		NextBatch string          `json:"next_batch,omitempty"`
	}{Rooms: []hierarchyRoom{}}
	if from < len(w.rooms) {
		res.Rooms = w.rooms[from:min(len(w.rooms), from+limit)]
	}
	if w.more || len(w.rooms) > from+limit {
		res.NextBatch = strconv.Itoa(from + limit)
	}
	return httputil.OK(res), nil
}

// maxRemoteHierarchyRequests bounds the other servers' /hierarchy answers one walk asks for.
const maxRemoteHierarchyRequests = 20

// hierarchyWalk collects a space's rooms depth first until it has want of them. Rooms
// this server does not know are described by the servers their m.space.child events name
// (federation /hierarchy), whose answers also describe those rooms' children.
type hierarchyWalk struct {
	rm            *Rooms
	userID        string
	suggestedOnly bool
	maxDepth      int
	want          int
	seen          map[string]bool
	rooms         []hierarchyRoom
	more          bool
	// remote holds the rooms other servers described; inaccessible those they named as
	// out of reach.
	remote       map[string]fclient.RoomHierarchyRoom
	inaccessible map[string]bool
	asked        int
}

func (w *hierarchyWalk) visit(ctx context.Context, room hierarchyRoom, depth int) error {
	if len(w.rooms) >= w.want || len(w.seen) > maxHierarchyRooms {
		w.more = true
		return nil
	}
	children := validChildren(room.ChildrenState)
	room.ChildrenState = make([]childState, len(children))
	for i, c := range children {
		room.ChildrenState[i] = c.event
	}
	w.rooms = append(w.rooms, room)
	if depth >= w.maxDepth {
		return nil
	}
	for _, c := range children {
		if w.seen[c.roomID] || (w.suggestedOnly && !c.suggested) {
			continue
		}
		w.seen[c.roomID] = true
		child, err := w.child(ctx, c)
		if err != nil {
			return err
		}
		if child == nil {
			continue
		}
		if err = w.visit(ctx, *child, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// child describes a space's child room the user may learn about, nil for one they may not
// or that no server could describe.
func (w *hierarchyWalk) child(ctx context.Context, c spaceChild) (*hierarchyRoom, error) {
	a, err := w.rm.loadRoom(ctx, c.roomID, w.userID, true)
	if err != nil {
		return nil, err
	}
	if a != nil {
		ok, err := w.rm.accessible(ctx, a, w.userID)
		if err != nil || !ok {
			return nil, err
		}
		room := localHierarchyRoom(a)
		return &room, nil
	}
	r, ok := w.remoteRoom(ctx, c)
	if !ok {
		return nil, nil
	}
	if ok, err = w.rm.remoteAccessible(ctx, r, w.userID); err != nil || !ok {
		return nil, err
	}
	room := hierarchyRoom{RoomSummary: rsapi.RoomSummary{RoomID: r.RoomID, Name: r.Name, Topic: r.Topic, CanonicalAlias: r.CanonicalAlias,
		AvatarURL: r.AvatarURL, NumJoinedMembers: r.JoinedMembersCount, WorldReadable: r.WorldReadable, GuestCanJoin: r.GuestCanJoin,
		JoinRule: r.JoinRule, RoomType: r.RoomType}, ChildrenState: make([]childState, 0, len(r.ChildrenState)), AllowedRoomIDs: r.AllowedRoomIDs}
	for _, e := range r.ChildrenState {
		room.ChildrenState = append(room.ChildrenState, childState{Content: e.Content, OriginServerTS: int64(e.OriginServerTS), Sender: e.Sender, StateKey: e.StateKey, Type: e.Type})
	}
	return &room, nil
}

// remoteRoom is another server's description of a room this server does not know: from
// an earlier answer, or asked of the child event's via servers.
func (w *hierarchyWalk) remoteRoom(ctx context.Context, c spaceChild) (fclient.RoomHierarchyRoom, bool) {
	if r, ok := w.remote[c.roomID]; ok || w.inaccessible[c.roomID] || w.rm.Federation == nil || w.asked >= maxRemoteHierarchyRequests {
		return r, ok
	}
	w.asked++
	res, err := w.rm.Federation.QueryRoomHierarchy(ctx, &fapi.QueryRoomHierarchyRequest{RoomID: c.roomID, Servers: c.via, SuggestedOnly: w.suggestedOnly})
	if err != nil {
		return fclient.RoomHierarchyRoom{}, false // no server could describe it: left out, as the spec says
	}
	w.remote[c.roomID] = res.Room
	for _, r := range res.Children {
		if _, ok := w.remote[r.RoomID]; !ok && r.RoomID != "" {
			w.remote[r.RoomID] = r
		}
	}
	for _, id := range res.InaccessibleChildren {
		w.inaccessible[id] = true
	}
	return res.Room, true
}

// remoteAccessible reports whether userID may learn about a room another server
// described: world-readable rooms and rooms anyone may join or knock on, and restricted
// rooms for members of an allowed room (as this server knows them).
func (rm *Rooms) remoteAccessible(ctx context.Context, r fclient.RoomHierarchyRoom, userID string) (bool, error) {
	switch {
	case r.WorldReadable:
		return true, nil
	case r.JoinRule == spec.Public || r.JoinRule == spec.Knock || r.JoinRule == spec.KnockRestricted:
		return true, nil
	case r.JoinRule != spec.Restricted:
		return false, nil
	}
	for _, roomID := range r.AllowedRoomIDs {
		m, err := rm.RSAPI.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: roomID, UserID: userID})
		if err != nil {
			return false, err
		}
		if m.Membership == spec.Join {
			return true, nil
		}
	}
	return false, nil
}

// localHierarchyRoom describes a room this server knows.
func localHierarchyRoom(a *roomAccess) hierarchyRoom {
	return hierarchyRoom{RoomSummary: a.summary, ChildrenState: localChildState(a.children),
		AllowedRoomIDs: a.allow, RoomVersion: a.version, Encryption: a.encryption}
}

// errRemoteAuthoriser is restrictedJoinAuthoriser's answer when this server cannot vouch
// for a restricted join: none of its users in the room may invite, or it is in none of
// the allowed rooms and so cannot tell whether the user is. A server of another member
// may (make_join then names that server's authorising user).
var errRemoteAuthoriser = errors.New("no local user may authorise the join")

// restrictedJoinAuthoriser is, for a local join to a room whose join rule is restricted or
// knock_restricted by a user not invited, a local member with the power to invite who
// vouches for the join (join_authorised_via_users_server, spec "Restricted rooms"); ""
// when the join rule is another. A user in none of the allowed rooms this server is in is
// 403 M_FORBIDDEN; errRemoteAuthoriser when only another server could vouch.
func (rm *Rooms) restrictedJoinAuthoriser(ctx context.Context, roomID, userID, membership string) (string, error) {
	if membership == spec.Invite || membership == spec.Join {
		return "", nil
	}
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID,
		Tuples: []rsapi.StateKeyTuple{{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels}, {EventType: spec.MRoomJoinRules}},
		Types:  []string{spec.MRoomMember}})
	if err != nil || !cur.RoomExists {
		return "", err
	}
	var rule rsapi.JoinRule
	state := make([]gomatrixserverlib.PDU, len(cur.StateEvents))
	for i, e := range cur.StateEvents {
		state[i] = e.PDU
		if e.Type() == spec.MRoomJoinRules {
			rule = rsapi.ParseJoinRule(e.Content())
		}
	}
	if !rule.Restricted() {
		return "", nil
	}
	allowed, known := false, false
	for _, a := range rule.AllowedRooms {
		in, err := rm.serverInRoom(ctx, a)
		if err != nil {
			return "", err
		}
		known = known || in
		m, err := rm.RSAPI.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: a, UserID: userID})
		if err != nil {
			return "", err
		}
		if m.Membership == spec.Join {
			allowed = true
			break
		}
	}
	switch {
	case !allowed && known:
		return "", matrixerr.Forbidden("you are not a member of a room that this room allows")
	case !allowed:
		return "", errRemoteAuthoriser
	}
	if u := rsapi.JoinAuthoriser(state, rm.ServerName); u != "" {
		return u, nil
	}
	return "", errRemoteAuthoriser
}
