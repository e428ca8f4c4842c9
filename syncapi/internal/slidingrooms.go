package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// roomPass is how a matched room goes into a response.
type roomPass struct {
	roomID string
	c      *candidate
	w      *roomWant
	sent   *sentRoom
	// next is what the connection will remember of the room after this response.
	next    *sentRoom
	initial bool
	// expanded marks a room sent whole again because its timeline limit grew.
	expanded bool
}

// candidateFor is the room's entry in the server list or, for a subscribed room the user
// left, one made from their membership history.
func (b *slidingBuild) candidateFor(roomID string) *candidate {
	if c := b.byID[roomID]; c != nil {
		return c
	}
	now := b.rooms[roomID].latest()
	return &candidate{roomID: roomID, membership: now.Membership, memberPos: now.Position, key: now.Position, bump: now.Position}
}

// writeRooms decides which matched rooms the response carries (new to the connection, with
// a grown config, or changed since sent) and writes them; it returns the connection's
// next state.
func (b *slidingBuild) writeRooms(ctx context.Context, res *types.SlidingResponse) (*connState, error) {
	next := &connState{Rooms: make(map[string]*sentRoom, len(b.prev.Rooms)), Counts: b.counts}
	for roomID, sr := range b.prev.Rooms {
		next.Rooms[roomID] = sr
	}
	b.initial = map[string]bool{}
	var passes []*roomPass
	var needState []string
	for roomID, w := range b.wants {
		p := &roomPass{roomID: roomID, c: b.candidateFor(roomID), w: w, sent: b.prev.Rooms[roomID]}
		cfg := w.configKey()
		isDM := b.direct[roomID]
		switch {
		case p.sent == nil:
			p.initial = true
		case w.limit > p.sent.Limit || cfg != p.sent.Config:
			p.initial, p.expanded = true, w.limit > p.sent.Limit
		case p.c.key <= p.sent.Pos && isDM == p.sent.IsDM:
			if w.limit < p.sent.Limit {
				next.Rooms[roomID] = &sentRoom{Pos: p.sent.Pos, Limit: w.limit, Config: cfg, Bump: p.sent.Bump, IsDM: isDM, Members: p.sent.Members}
			}
			continue
		}
		p.next = &sentRoom{Pos: b.to, Limit: w.limit, Config: cfg, Bump: p.c.bump, IsDM: isDM}
		next.Rooms[roomID] = p.next
		b.initial[roomID] = p.initial
		passes = append(passes, p)
		needState = append(needState, roomID)
	}
	current, err := b.s.db.CurrentState(ctx, needState)
	if err != nil {
		return nil, fmt.Errorf("load current state: %w", err)
	}
	for _, p := range passes {
		room, err := b.room(ctx, p, current[p.roomID])
		if err != nil {
			return nil, err
		}
		res.Rooms[p.roomID] = room
	}
	return next, nil
}

// room builds one room's result.
func (b *slidingBuild) room(ctx context.Context, p *roomPass, current []storage.StateEvent) (*types.SlidingRoom, error) {
	c := p.c
	r := &types.SlidingRoom{Initial: p.initial, ExpandedTimeline: p.expanded, Membership: c.membership, Lists: p.w.lists}
	if p.initial || p.sent.Bump != c.bump {
		bump := c.bump
		r.BumpStamp = &bump
	}
	isDM := b.direct[p.roomID]
	if isDM && p.initial || !p.initial && isDM != p.sent.IsDM {
		r.IsDM = &isDM
	}
	everJoined := slices.ContainsFunc(b.rooms[p.roomID], func(m storage.MemberChange) bool { return m.Membership == spec.Join })
	if c.membership == spec.Invite || c.membership == spec.Knock || !everJoined {
		// A user who never joined (an invite, a knock, or one rejected or withdrawn) sees
		// only the stripped state, as an invite carries it.
		stripped := invitedRoom(b.req.UserID, current).InviteState.Events
		r.StrippedState, r.InviteState = stripped, stripped
		return r, nil
	}
	upTo := b.to
	if c.membership != spec.Join {
		upTo = c.memberPos // nothing after the user left is theirs to see
	}
	after := types.HistoryStart
	if !p.initial {
		after = p.sent.Pos
	}
	v := &viewer{userID: b.req.UserID, deviceID: b.req.DeviceID, history: b.rooms[p.roomID], current: c.membership}
	pg, err := walk(ctx, b.s.db, p.roomID, v, nil, true, upTo, after, int(p.w.limit))
	if err != nil {
		return nil, err
	}
	evs := reversed(pg.events)
	if r.Timeline, err = b.s.clientEvents(ctx, evs, v); err != nil {
		return nil, err
	}
	r.Limited = pg.more
	live := 0
	for _, e := range evs {
		if b.since > 0 && e.Position > b.since {
			live++
		}
	}
	r.NumLive = &live
	if len(evs) > 0 {
		r.PrevBatch = types.StreamToken{Position: evs[0].Position - 1}.String()
	} else if p.initial {
		r.PrevBatch = types.StreamToken{Position: upTo}.String()
	}
	st, err := stateAt(ctx, b.s.db, p.roomID, current, upTo)
	if err != nil {
		return nil, err
	}
	var removed []storage.StateKeyTuple
	if !p.initial {
		if removed, err = b.s.db.StateRemovals(ctx, p.roomID, p.sent.Pos, upTo); err != nil {
			return nil, fmt.Errorf("load state removals of %s: %w", p.roomID, err)
		}
	}
	if r.RequiredState, err = b.requiredState(p, st, removed, evs, r.Limited); err != nil {
		return nil, err
	}
	b.describe(p, st, r)
	return r, nil
}

// requiredState picks the state the room's configs ask for: all of it that matches on an
// initial pass, what changed since the room was sent otherwise; with lazy members, the
// member events of the timeline's senders and targets, and (when the timeline is not
// limited) every membership change since the room was sent. Entries removed since the
// room was sent (removed) and absent from st go out as stubs when the configs ask for
// them.
func (b *slidingBuild) requiredState(p *roomPass, st roomState, removed []storage.StateKeyTuple, timeline []storage.Event, limited bool) ([]types.SlidingState, error) {
	lazy := false
	for _, rs := range p.w.states {
		lazy = lazy || rs.Lazy
	}
	lazyUsers := map[string]bool{}
	if lazy {
		for _, e := range timeline {
			lazyUsers[e.Sender] = true
			if e.Type == spec.MRoomMember && e.StateKey != nil {
				lazyUsers[*e.StateKey] = true
			}
		}
	}
	// With lazy members, a member event the client has (sent on this connection since it
	// last had to forget its members) is not sent again.
	var known map[string]int64
	if lazy && !p.initial && !limited {
		known = p.sent.Members
	}
	var picked []stateEntry
	for k, e := range st {
		changed := p.initial || e.position > p.sent.Pos
		member := k.evType == spec.MRoomMember
		switch {
		case lazy && member && known[k.stateKey] >= e.position:
			continue
		case lazy && member && lazyUsers[k.stateKey]:
		case lazy && member && changed && !p.initial && !limited:
		case changed && b.wanted(p.w, k):
		default:
			continue
		}
		picked = append(picked, e)
	}
	if lazy {
		p.next.Members = rememberMembers(known, picked)
	}
	sort.Slice(picked, func(i, j int) bool { return picked[i].position < picked[j].position })
	out := make([]types.SlidingState, 0, len(picked))
	for _, e := range picked {
		c, err := clientevent.New(e.eventID, e.json)
		if err != nil {
			return nil, err
		}
		out = append(out, types.SlidingState{Event: c})
	}
	stubbed := map[stateKey]bool{}
	for _, rm := range removed {
		k := stateKey{rm.Type, rm.StateKey}
		if _, present := st[k]; present || stubbed[k] {
			continue
		}
		member := k.evType == spec.MRoomMember
		if b.wanted(p.w, k) || lazy && member && (lazyUsers[k.stateKey] || !limited) {
			stubbed[k] = true
			out = append(out, types.SlidingState{Event: clientevent.Event{Type: k.evType, StateKey: &rm.StateKey}, Stub: true})
		}
	}
	return out, nil
}

// rememberMembers is known plus the member events among picked, by user.
func rememberMembers(known map[string]int64, picked []stateEntry) map[string]int64 {
	out := make(map[string]int64, len(known)+len(picked))
	for u, pos := range known {
		out[u] = pos
	}
	for _, e := range picked {
		if e.evType == spec.MRoomMember {
			out[e.stateKey] = e.position
		}
	}
	return out
}

// wanted reports whether any of the room's configs includes the state entry k (and does
// not exclude it). A config with lazy members matches member events only by an element
// naming the type m.room.member (all members without a state key, as Synapse's
// ["m.room.member", "*"]): its type wildcards leave members to lazy loading.
func (b *slidingBuild) wanted(w *roomWant, k stateKey) bool {
	matches := func(el types.StateElement, explicitMember bool) bool {
		if explicitMember && (el.Type == nil || *el.Type != spec.MRoomMember) {
			return false
		}
		if el.Type != nil && *el.Type != k.evType {
			return false
		}
		if el.StateKey == nil {
			return true
		}
		want := *el.StateKey
		if want == "$ME" {
			want = b.req.UserID
		}
		return want == k.stateKey
	}
	for _, rs := range w.states {
		explicit := rs.Lazy && k.evType == spec.MRoomMember
		included := false
		for _, el := range rs.Include {
			included = included || matches(el, explicit)
		}
		for _, el := range rs.Exclude {
			included = included && !matches(el, false)
		}
		if included {
			return true
		}
	}
	return false
}

// describe sets the room's name, avatar, heroes and member counts from its state: all of
// them on an initial pass; name, avatar and heroes otherwise only when they changed.
func (b *slidingBuild) describe(p *roomPass, st roomState, r *types.SlidingRoom) {
	changed := func(e stateEntry) bool { return p.initial || e.position > p.sent.Pos }
	named := false
	for _, f := range []struct {
		evType, field string
		dst           *json.RawMessage
	}{{spec.MRoomName, "name", &r.Name}, {"m.room.avatar", "url", &r.Avatar}} {
		e, ok := st[stateKey{f.evType, ""}]
		if !ok {
			continue
		}
		var ev struct {
			Content map[string]json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(e.json, &ev) // stored events are valid JSON
		var val string
		_ = json.Unmarshal(ev.Content[f.field], &val) // a non-string value counts as none
		if f.evType == spec.MRoomName {
			named = val != ""
		}
		switch {
		case !changed(e):
		case val != "":
			*f.dst, _ = json.Marshal(val) // a string always encodes
		case !p.initial:
			*f.dst = json.RawMessage("null")
		}
	}
	joined, invited := 0, 0
	membersChanged := false
	var present, gone []types.Hero
	for k, e := range st {
		if k.evType != spec.MRoomMember {
			continue
		}
		membersChanged = membersChanged || changed(e)
		var ev struct {
			Content struct {
				Membership  string `json:"membership"`
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(e.json, &ev) // stored events are valid JSON
		m := ev.Content.Membership
		switch m {
		case spec.Join:
			joined++
		case spec.Invite:
			invited++
		}
		if k.stateKey == b.req.UserID {
			continue
		}
		h := types.Hero{UserID: k.stateKey, DisplayName: ev.Content.DisplayName, AvatarURL: ev.Content.AvatarURL}
		if m == spec.Join || m == spec.Invite {
			present = append(present, h)
		} else {
			gone = append(gone, h)
		}
	}
	r.JoinedCount, r.InvitedCount = &joined, &invited
	if named || !membersChanged {
		return
	}
	heroes := present
	if len(heroes) == 0 {
		heroes = gone
	}
	sort.Slice(heroes, func(i, j int) bool { return heroes[i].UserID < heroes[j].UserID })
	r.Heroes = heroes[:min(len(heroes), maxHeroes)]
}
