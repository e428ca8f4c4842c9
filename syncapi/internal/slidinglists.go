package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// slidingBuild is one attempt at a sliding sync response, covering (since, to]. Its steps
// run in the order build calls them; each fills the fields documented as its output.
type slidingBuild struct {
	s         *Syncer
	req       *SlidingRequest
	prev      *connState
	since, to int64

	// rooms is the user's membership history per room (load).
	rooms map[string]memberHistory
	// order is the server's room list, most recent activity first; byID indexes it (load).
	order []*candidate
	byID  map[string]*candidate
	// accountData is all the user's account data up to to; direct are the DM rooms of
	// m.direct and tags each room's m.tag tags (load).
	accountData []storage.AccountData
	direct      map[string]bool
	tags        map[string]map[string]bool
	// listRooms are the rooms in each list's ranges, subscribed the permitted rooms of
	// room_subscriptions, and wants what each matched room asks for (match).
	listRooms  map[string][]string
	subscribed []string
	wants      map[string]*roomWant
	counts     map[string]int
	// initial are the rooms sent whole in this response (writeRooms).
	initial map[string]bool
}

// candidate is a room of the server's list with the user's membership in it.
type candidate struct {
	roomID     string
	membership string
	memberPos  int64
	// key orders the list (the latest activity the user may see) and tells whether the
	// room changed since it was sent; bump is the room's bump stamp.
	key  int64
	bump int64
}

// roomWant is the combined room config of every rule a room matched.
type roomWant struct {
	limit  int64
	states []types.RequiredState
	lists  []string
}

// configKey identifies the combined required state config.
func (w *roomWant) configKey() string {
	keys := make([]string, len(w.states))
	for i, st := range w.states {
		keys[i] = st.Key()
	}
	sort.Strings(keys)
	keys = slices.Compact(keys)
	b, _ := json.Marshal(keys) // strings always encode
	return string(b)
}

func (b *slidingBuild) build(ctx context.Context) (*types.SlidingResponse, *connState, error) {
	if err := b.load(ctx); err != nil {
		return nil, nil, err
	}
	res := &types.SlidingResponse{Lists: map[string]types.SlidingListResult{}, Rooms: map[string]*types.SlidingRoom{}}
	if err := b.match(ctx, res); err != nil {
		return nil, nil, err
	}
	next, err := b.writeRooms(ctx, res)
	if err != nil {
		return nil, nil, err
	}
	if err = b.extensions(ctx, res); err != nil {
		return nil, nil, err
	}
	return res, next, nil
}

// empty reports whether res has nothing the client lacks.
func (b *slidingBuild) empty(res *types.SlidingResponse) bool {
	if len(res.Rooms) > 0 || !res.Extensions.IsEmpty() {
		return false
	}
	for name, c := range b.counts {
		if old, ok := b.prev.Counts[name]; !ok || old != c {
			return false
		}
	}
	return true
}

// load reads the user's rooms, orders them, and reads their account data. A connection
// with neither lists nor subscriptions (one only for to-device messages and keys, as
// matrix-rust-sdk keeps) reads no rooms, and account data only for its extension.
func (b *slidingBuild) load(ctx context.Context) error {
	b.rooms, b.byID, b.direct, b.tags = map[string]memberHistory{}, map[string]*candidate{}, map[string]bool{}, map[string]map[string]bool{}
	withRooms := len(b.req.Body.Lists) > 0 || len(b.req.Body.RoomSubscriptions) > 0
	if withRooms {
		changes, err := b.s.db.MembershipHistory(ctx, b.req.UserID, b.to)
		if err != nil {
			return fmt.Errorf("load memberships: %w", err)
		}
		b.rooms = byRoom(changes.All())
		if err = b.candidates(ctx); err != nil {
			return err
		}
	}
	if ad := b.req.Body.Ext.AccountData; !withRooms && (ad == nil || !ad.On()) {
		return nil
	}
	var err error
	if b.accountData, err = b.s.db.AccountData(ctx, b.req.UserID, 0, b.to); err != nil {
		return fmt.Errorf("load account data: %w", err)
	}
	for _, ad := range b.accountData {
		switch {
		case ad.RoomID == "" && ad.Type == "m.direct":
			var direct map[string][]string
			_ = json.Unmarshal(ad.Content, &direct) // malformed m.direct marks no room as a DM
			for _, ids := range direct {
				for _, id := range ids {
					b.direct[id] = true
				}
			}
		case ad.RoomID != "" && ad.Type == "m.tag":
			var tags struct {
				Tags map[string]json.RawMessage `json:"tags"`
			}
			_ = json.Unmarshal(ad.Content, &tags) // malformed tags tag nothing
			b.tags[ad.RoomID] = map[string]bool{}
			for t := range tags.Tags {
				b.tags[ad.RoomID][t] = true
			}
		}
	}
	return nil
}

// candidates builds the server's room list (MSC4186 "Lists"): rooms the user is joined,
// invited or knocking in, was kicked or banned from after joining, and rooms they left
// that this connection has seen; ordered by the latest activity the user may see (for a
// room they are not in, their membership change).
func (b *slidingBuild) candidates(ctx context.Context) error {
	var joined, leaves []string
	b.byID = map[string]*candidate{}
	for roomID, h := range b.rooms {
		now := h.latest()
		c := &candidate{roomID: roomID, membership: now.Membership, memberPos: now.Position, key: now.Position, bump: now.Position}
		everJoined := slices.ContainsFunc(h, func(m storage.MemberChange) bool { return m.Membership == spec.Join })
		switch now.Membership {
		case spec.Join:
			joined = append(joined, roomID)
		case spec.Invite, spec.Knock:
		case spec.Ban:
			if !everJoined {
				continue
			}
		case spec.Leave:
			if b.prev.Rooms[roomID] == nil {
				leaves = append(leaves, now.EventID)
				continue
			}
		default:
			continue
		}
		b.byID[roomID] = c
	}
	if err := b.addKicks(ctx, leaves); err != nil {
		return err
	}
	if err := b.directInvites(ctx); err != nil {
		return err
	}
	activity, err := b.s.activity.Rooms(ctx, joined, b.to)
	if err != nil {
		return fmt.Errorf("load room activity: %w", err)
	}
	for _, roomID := range joined {
		c, a := b.byID[roomID], activity[roomID]
		if a.Last > b.to {
			// The room got an event after to while this response was being built: its
			// activity as of to is its latest event up to to.
			if a, err = b.activityAt(ctx, roomID, a); err != nil {
				return err
			}
		}
		c.key = max(c.key, a.Last)
		if a.Bump > 0 {
			c.bump = a.Bump
		}
	}
	b.order = make([]*candidate, 0, len(b.byID))
	for _, c := range b.byID {
		b.order = append(b.order, c)
	}
	sort.Slice(b.order, func(i, j int) bool {
		if b.order[i].key != b.order[j].key {
			return b.order[i].key > b.order[j].key
		}
		return b.order[i].roomID < b.order[j].roomID
	})
	return nil
}

// activityAt is the room's activity a as of b.to: its latest event up to b.to, and its
// bump stamp no later than that.
func (b *slidingBuild) activityAt(ctx context.Context, roomID string, a storage.RoomActivity) (storage.RoomActivity, error) {
	evs, err := b.s.db.RoomEvents(ctx, roomID, storage.Range{After: 0, UpTo: b.to, Backward: true, Limit: 1})
	if err != nil {
		return a, fmt.Errorf("read latest event of %s: %w", roomID, err)
	}
	a.Last = 0
	if len(evs) > 0 {
		a.Last = evs[0].Position
	}
	if a.Bump > b.to {
		a.Bump = a.Last
	}
	return a, nil
}

// addKicks adds the rooms whose leave event (among leaveIDs) someone else sent: the user
// was kicked, or their invite or knock was withdrawn or refused.
func (b *slidingBuild) addKicks(ctx context.Context, leaveIDs []string) error {
	if len(leaveIDs) == 0 {
		return nil
	}
	evs, err := b.s.db.EventsByID(ctx, leaveIDs)
	if err != nil {
		return fmt.Errorf("load leave events: %w", err)
	}
	for _, e := range evs {
		if e.Sender == b.req.UserID {
			continue
		}
		now := b.rooms[e.RoomID].latest()
		b.byID[e.RoomID] = &candidate{roomID: e.RoomID, membership: now.Membership, memberPos: now.Position, key: now.Position, bump: now.Position}
	}
	return nil
}

// directInvites marks as DMs the rooms the user is invited to by an invite with
// is_direct: the room is not in their m.direct account data until they join it, yet the
// client shows the invite as one to a direct chat.
func (b *slidingBuild) directInvites(ctx context.Context) error {
	var ids []string
	for _, c := range b.byID {
		if c.membership == spec.Invite {
			ids = append(ids, b.rooms[c.roomID].latest().EventID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	evs, err := b.s.db.EventsByID(ctx, ids)
	if err != nil {
		return fmt.Errorf("load invite events: %w", err)
	}
	for _, e := range evs {
		var ev struct {
			Content struct {
				IsDirect bool `json:"is_direct"`
			} `json:"content"`
		}
		if json.Unmarshal(e.JSON, &ev) == nil && ev.Content.IsDirect {
			b.direct[e.RoomID] = true
		}
	}
	return nil
}

// match applies the lists (filters, counts, ranges) and subscriptions, filling listRooms,
// subscribed, wants and counts, and the lists of res.
func (b *slidingBuild) match(ctx context.Context, res *types.SlidingResponse) error {
	b.listRooms, b.wants, b.counts = map[string][]string{}, map[string]*roomWant{}, map[string]int{}
	facts, children, err := b.filterData(ctx)
	if err != nil {
		return err
	}
	want := func(roomID string, cfg *types.SlidingRoomConfig, list string) {
		w := b.wants[roomID]
		if w == nil {
			w = &roomWant{}
			b.wants[roomID] = w
		}
		w.limit = max(w.limit, *cfg.TimelineLimit)
		w.states = append(w.states, cfg.State)
		if list != "" {
			w.lists = append(w.lists, list)
		}
	}
	names := make([]string, 0, len(b.req.Body.Lists))
	for name := range b.req.Body.Lists {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l := b.req.Body.Lists[name]
		var filtered []*candidate
		for _, c := range b.order {
			if b.passes(c, l.Filters, facts, children) {
				filtered = append(filtered, c)
			}
		}
		b.counts[name] = len(filtered)
		res.Lists[name] = types.SlidingListResult{Count: len(filtered)}
		in := make([]bool, len(filtered))
		if !l.Ranged {
			for i := range in {
				in[i] = true
			}
		}
		for _, rg := range l.Ranges {
			for i := rg[0]; i <= rg[1] && i < int64(len(filtered)); i++ {
				in[i] = true
			}
		}
		for i, c := range filtered {
			if in[i] {
				b.listRooms[name] = append(b.listRooms[name], c.roomID)
				want(c.roomID, &l.SlidingRoomConfig, name)
			}
		}
	}
	for roomID, cfg := range b.req.Body.RoomSubscriptions {
		if b.permitted(roomID) {
			b.subscribed = append(b.subscribed, roomID)
			want(roomID, &cfg, "")
		}
	}
	sort.Strings(b.subscribed)
	return nil
}

// permitted reports whether the user may see the room: they are or were joined, or are
// invited or knocking (a subscription to any other room is ignored).
func (b *slidingBuild) permitted(roomID string) bool {
	if b.byID[roomID] != nil {
		return true
	}
	h := b.rooms[roomID]
	return slices.ContainsFunc(h, func(m storage.MemberChange) bool { return m.Membership == spec.Join })
}

// filterData loads what the lists' filters read: each room's facts (type, encryption),
// and the children of the spaces named (only of spaces the user is joined to).
func (b *slidingBuild) filterData(ctx context.Context) (map[string]storage.RoomFacts, map[string]bool, error) {
	needFacts := false
	var spaces []string
	for _, l := range b.req.Body.Lists {
		f := l.Filters
		if f == nil {
			continue
		}
		needFacts = needFacts || f.IsEncrypted != nil || f.RoomTypes != nil || f.NotRoomTypes != nil
		for _, sp := range f.Spaces {
			if c := b.byID[sp]; c != nil && c.membership == spec.Join {
				spaces = append(spaces, sp)
			}
		}
	}
	var facts map[string]storage.RoomFacts
	if needFacts {
		ids := make([]string, 0, len(b.order))
		for _, c := range b.order {
			ids = append(ids, c.roomID)
		}
		var err error
		if facts, err = b.s.activity.Facts(ctx, ids, b.to); err != nil {
			return nil, nil, err
		}
	}
	children := map[string]bool{}
	if len(spaces) > 0 {
		st, err := b.s.db.StateOfTypes(ctx, spaces, []string{"m.space.child"})
		if err != nil {
			return nil, nil, fmt.Errorf("load space children: %w", err)
		}
		for _, evs := range st {
			for _, e := range evs {
				var ev struct {
					Content struct {
						Via []string `json:"via"`
					} `json:"content"`
				}
				if json.Unmarshal(e.JSON, &ev) == nil && len(ev.Content.Via) > 0 {
					children[e.StateKey] = true
				}
			}
		}
	}
	return facts, children, nil
}

// passes applies a list's filters to a room.
func (b *slidingBuild) passes(c *candidate, f *types.SlidingFilters, facts map[string]storage.RoomFacts, children map[string]bool) bool {
	if f == nil {
		return true
	}
	if f.IsDM != nil && *f.IsDM != b.direct[c.roomID] {
		return false
	}
	if inv := f.Invited(); inv != nil && *inv != (c.membership == spec.Invite) {
		return false
	}
	if f.Spaces != nil && !children[c.roomID] {
		return false
	}
	encrypted, roomType := facts[c.roomID].Encrypted, facts[c.roomID].Type
	if f.IsEncrypted != nil && *f.IsEncrypted != encrypted {
		return false
	}
	sameType := func(t *string) bool {
		return t == nil && roomType == nil || t != nil && roomType != nil && *t == *roomType
	}
	if f.RoomTypes != nil && !slices.ContainsFunc(f.RoomTypes, sameType) {
		return false
	}
	if slices.ContainsFunc(f.NotRoomTypes, sameType) {
		return false
	}
	tags := b.tags[c.roomID]
	for _, t := range f.NotTags {
		if tags[t] {
			return false
		}
	}
	return f.Tags == nil || slices.ContainsFunc(f.Tags, func(t string) bool { return tags[t] })
}
