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

// strippedTypes are the state types an invite carries (spec "stripped state").
var strippedTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar", "m.room.canonical_alias", "m.room.encryption"}

// writeRoom adds one planned room to res.
func (s *Syncer) writeRoom(ctx context.Context, req *SyncRequest, p *roomPlan, current []storage.StateEvent, res *types.SyncResponse) error {
	if p.kind == spec.Invite {
		if p.viewer.ignored[inviter(req.UserID, current)] {
			return nil
		}
		res.Rooms.Invite[p.roomID] = invitedRoom(req.UserID, current)
		return nil
	}
	if p.kind == spec.Knock {
		res.Rooms.Knock[p.roomID] = &types.KnockedRoom{KnockState: invitedRoom(req.UserID, current).InviteState}
		return nil
	}
	evs := reversed(p.page.events)
	tl, err := s.clientEvents(ctx, evs, p.viewer)
	if err != nil {
		return err
	}
	if req.Filter.EventFormat == types.EventFormatFederation {
		for i := range tl {
			tl[i].UseFederationFormat(evs[i].JSON)
		}
	}
	// A room new to this sync whose stored history does not reach its create event (one
	// joined over federation) has older events elsewhere: limited tells the client to page
	// back, which backfills them. A room joined since the last sync is limited unless its
	// timeline starts at the create event: the client has none of its earlier history.
	limited := p.limited || p.full && !p.page.more && p.page.last != "" && p.page.last != spec.MRoomCreate ||
		p.newlyJoined && (len(evs) == 0 || evs[0].Type != spec.MRoomCreate)
	timeline := types.Timeline{Events: tl, Limited: limited, PrevBatch: types.StreamToken{Position: p.page.next}.String()}
	start := p.upTo
	if len(evs) > 0 {
		start = evs[0].Position - 1
		timeline.PrevBatch = types.StreamToken{Position: start}.String()
	}
	state := []clientevent.Event{}
	if current != nil {
		st, err := stateAt(ctx, s.db, p.roomID, current, start)
		if err != nil {
			return err
		}
		if state, err = s.selectState(req, p, st, evs); err != nil {
			return err
		}
	}
	if p.kind == spec.Leave {
		res.Rooms.Leave[p.roomID] = &types.LeftRoom{Timeline: timeline, State: types.StateEvents{Events: state},
			AccountData: types.AccountData{Events: []types.BasicEvent{}}}
		return nil
	}
	if !p.full && len(tl) == 0 && len(state) == 0 {
		// An incremental sync leaves out a room whose new events the filter all dropped
		// (account data, receipts or typing may still add it), as Synapse does.
		return nil
	}
	var jr *types.JoinedRoom
	if p.kind == kindPeek {
		jr = types.NewJoinedRoom()
		res.Rooms.Peek[p.roomID] = jr
	} else {
		jr = joinedRoom(res, p.roomID)
	}
	jr.Timeline, jr.State = timeline, types.StateEvents{Events: state}
	if current != nil {
		jr.Summary = roomSummary(req.UserID, current)
	}
	return nil
}

// maxHeroes is how many heroes a room summary names, as the spec suggests.
const maxHeroes = 5

// roomSummary counts the joined and invited members of a room's current state and, unless
// the room has a name or canonical alias, names up to maxHeroes other members (joined or
// invited, else those who left), by user ID.
func roomSummary(userID string, current []storage.StateEvent) *types.RoomSummary {
	sum := &types.RoomSummary{}
	named := false
	var present, gone []string
	for _, st := range current {
		switch st.Type {
		case spec.MRoomName, "m.room.canonical_alias":
			named = named || st.StateKey == "" && hasNonEmpty(st.JSON, st.Type)
			continue
		case spec.MRoomMember:
		default:
			continue
		}
		switch st.Membership {
		case spec.Join:
			sum.JoinedMemberCount++
		case spec.Invite:
			sum.InvitedMemberCount++
		}
		if st.StateKey == userID {
			continue
		}
		if st.Membership == spec.Join || st.Membership == spec.Invite {
			present = append(present, st.StateKey)
		} else {
			gone = append(gone, st.StateKey)
		}
	}
	if named {
		return sum
	}
	heroes := present
	if len(heroes) == 0 {
		heroes = gone
	}
	sort.Strings(heroes)
	sum.Heroes = heroes[:min(len(heroes), maxHeroes)]
	return sum
}

// hasNonEmpty reports whether an m.room.name event has a name, or an m.room.canonical_alias
// event an alias.
func hasNonEmpty(raw []byte, evType string) bool {
	var ev struct {
		Content struct {
			Name  string `json:"name"`
			Alias string `json:"alias"`
		} `json:"content"`
	}
	if json.Unmarshal(raw, &ev) != nil {
		return false
	}
	if evType == spec.MRoomName {
		return ev.Content.Name != ""
	}
	return ev.Content.Alias != ""
}

// selectState picks from the state at the timeline's start what the response carries: all
// of it for a full sync, what changed since the last sync for a limited one. With lazy
// loading, membership is given for the senders of timeline events (and the user, in a full
// sync) on top of the membership changes of a limited sync's gap, less what this device was
// sent already, unless the filter asks for redundant members. Events in the timeline are
// not repeated.
func (s *Syncer) selectState(req *SyncRequest, p *roomPlan, st roomState, timeline []storage.Event) ([]clientevent.Event, error) {
	rf := &req.Filter.Room
	lazy := rf.Timeline.LazyLoadMembers || rf.State.LazyLoadMembers
	var known map[string]string
	if lazy && !p.full && req.Since != nil && !rf.Timeline.IncludeRedundantMembers && !rf.State.IncludeRedundantMembers {
		known = s.lazy.known(req.UserID, req.DeviceID, p.roomID, req.Since.Position)
	}
	inTimeline := make(map[string]bool, len(timeline))
	senders := map[string]bool{}
	for _, e := range timeline {
		inTimeline[e.EventID] = true
		senders[e.Sender] = true
	}
	if p.full {
		senders[req.UserID] = true
	}
	var picked []stateEntry
	for k, e := range st {
		include := p.full || p.limited && e.position > p.after
		if lazy && k.evType == spec.MRoomMember {
			include = (senders[k.stateKey] || !p.full && include) && known[k.stateKey] != e.eventID
		}
		if include && !inTimeline[e.eventID] {
			picked = append(picked, e)
		}
	}
	sort.Slice(picked, func(i, j int) bool { return picked[i].position < picked[j].position })
	sf := &rf.State
	if !sf.AllowsRoom(p.roomID) {
		picked = nil
	}
	out := make([]clientevent.Event, 0, len(picked))
	sent := map[string]string{}
	for _, e := range picked {
		c, err := clientevent.New(e.eventID, e.json)
		if err != nil {
			return nil, err
		}
		if sf.Allows(c.Type, c.Sender) {
			if req.Filter.EventFormat == types.EventFormatFederation {
				c.UseFederationFormat(e.json)
			}
			out = append(out, c)
			if e.evType == spec.MRoomMember {
				sent[e.stateKey] = e.eventID
			}
		}
	}
	if lazy {
		for _, e := range timeline {
			if e.Type == spec.MRoomMember && e.StateKey != nil {
				sent[*e.StateKey] = e.EventID
			}
		}
		s.lazy.record(req.UserID, req.DeviceID, p.roomID, sent, p.upTo, p.full)
	}
	return out, nil
}

// inviter is the sender of userID's membership event in a room's current state.
func inviter(userID string, current []storage.StateEvent) string {
	for _, st := range current {
		if st.Type == spec.MRoomMember && st.StateKey == userID {
			var ev struct {
				Sender string `json:"sender"`
			}
			if json.Unmarshal(st.JSON, &ev) == nil {
				return ev.Sender
			}
		}
	}
	return ""
}

// invitedRoom is an invite with its stripped state: the room's stripped state events, the
// inviter's m.room.member (which the spec recommends, and clients show) and the invite
// event itself. An invite from another server to a room this server is not in carries the
// room's stripped state in its unsigned invite_room_state (the only state known here);
// entries the current state lacks come from there.
func invitedRoom(userID string, current []storage.StateEvent) *types.InvitedRoom {
	r := &types.InvitedRoom{InviteState: types.InviteState{Events: []clientevent.StrippedEvent{}}}
	have := map[[2]string]bool{}
	var fromInvite []clientevent.StrippedEvent
	sender := inviter(userID, current)
	for _, st := range current {
		isInvite := st.Type == spec.MRoomMember && st.StateKey == userID
		isInviter := st.Type == spec.MRoomMember && sender != "" && st.StateKey == sender
		if !isInvite && !isInviter && (st.StateKey != "" || !slices.Contains(strippedTypes, st.Type)) {
			continue
		}
		c, err := clientevent.New(st.EventID, st.JSON)
		if err != nil {
			continue // stored events were valid JSON when written; a broken one is left out
		}
		r.InviteState.Events = append(r.InviteState.Events, c.Stripped())
		have[[2]string{st.Type, st.StateKey}] = true
		if isInvite {
			var ev struct {
				Unsigned struct {
					InviteRoomState []clientevent.StrippedEvent `json:"invite_room_state"`
					KnockRoomState  []clientevent.StrippedEvent `json:"knock_room_state"`
				} `json:"unsigned"`
			}
			_ = json.Unmarshal(st.JSON, &ev) // no invite_room_state is the usual case
			// A knock made through another server carries the room state it answered.
			fromInvite = append(ev.Unsigned.InviteRoomState, ev.Unsigned.KnockRoomState...)
		}
	}
	for _, e := range fromInvite {
		if e.Type != "" && !have[[2]string{e.Type, e.StateKey}] {
			have[[2]string{e.Type, e.StateKey}] = true
			r.InviteState.Events = append(r.InviteState.Events, e)
		}
	}
	return r
}

// addAccountData adds the account data changed in (since, to]: global data to the top level,
// room data to joined rooms (adding a room entry when only its account data changed).
func (s *Syncer) addAccountData(ctx context.Context, req *SyncRequest, rooms storage.Memberships, since, to int64, res *types.SyncResponse) error {
	ads, err := s.db.AccountData(ctx, req.UserID, since, to)
	if err != nil {
		return fmt.Errorf("load account data: %w", err)
	}
	for _, ad := range ads {
		ev := types.BasicEvent{Type: ad.Type, Content: ad.Content}
		if ad.RoomID == "" {
			if req.Filter.AccountData.Allows(ad.Type, req.UserID) {
				res.AccountData.Events = append(res.AccountData.Events, ev)
			}
			continue
		}
		if memberHistory(rooms.Room(ad.RoomID)).latest().Membership != spec.Join || !req.Filter.Room.AllowsRoom(ad.RoomID) ||
			!req.Filter.Room.AccountData.Allows(ad.Type, req.UserID) {
			continue
		}
		jr := joinedRoom(res, ad.RoomID)
		jr.AccountData.Events = append(jr.AccountData.Events, ev)
	}
	return nil
}

// joinedRoom is the room's entry in rooms.join, added if missing.
func joinedRoom(res *types.SyncResponse, roomID string) *types.JoinedRoom {
	jr := res.Rooms.Join[roomID]
	if jr == nil {
		jr = types.NewJoinedRoom()
		res.Rooms.Join[roomID] = jr
	}
	return jr
}
