// Package internal is the sync API's request logic: /sync (initial, incremental and
// long-polling), simplified sliding sync (sliding*.go), /messages and /context, over the
// sync API's own storage.
package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/notifier"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Syncer answers sync API requests.
type Syncer struct {
	db       storage.Database
	notifier *notifier.Notifier
	backfill *Backfill
	keys     uapi.SyncKeyAPI
	// activity orders sliding sync's room lists.
	activity *storage.ActivityIndex
	erasure  *Erasure
	// lazy remembers the members lazy-loading syncs sent to each device.
	lazy *LazyMembers
}

// NewSyncer builds a Syncer; bf is nil when /messages must not ask other servers for
// history, keys nil when /sync reports no key counts, er nil when no account's events are
// served redacted for its erasure, lazy nil when lazy-loading syncs send redundant members
// every time.
func NewSyncer(db storage.Database, n *notifier.Notifier, activity *storage.ActivityIndex, bf *Backfill, keys uapi.SyncKeyAPI, er *Erasure, lazy *LazyMembers) *Syncer {
	return &Syncer{db: db, notifier: n, activity: activity, backfill: bf, keys: keys, erasure: er, lazy: lazy}
}

// SyncRequest is a parsed GET /sync.
type SyncRequest struct {
	UserID    string
	DeviceID  string
	Since     *types.StreamToken
	Timeout   time.Duration
	Filter    *types.Filter
	FullState bool
	// WithoutToDevice leaves send-to-device messages out, neither returned nor acknowledged:
	// the request is GET /events, and the messages wait for the device's next /sync.
	WithoutToDevice bool
	// NewEventsOnly gives a room joined since the last sync only the events after Since (the
	// GET /events stream); /sync gives it its recent timeline, as an initial sync would.
	NewEventsOnly bool
}

// Sync answers a /sync. An incremental sync with nothing new waits, up to Timeout, for the
// notifier to report something for the user past the position it last looked at.
func (s *Syncer) Sync(ctx context.Context, req *SyncRequest) (*types.SyncResponse, error) {
	deadline := time.Now().Add(req.Timeout)
	if req.Since != nil && !req.WithoutToDevice {
		// The device has the response that ended at since, so it has the messages up to it.
		if err := s.db.AckToDevice(ctx, req.UserID, req.DeviceID, req.Since.Position); err != nil {
			return nil, fmt.Errorf("acknowledge to-device messages: %w", err)
		}
	}
	for {
		to, err := s.db.MaxPosition(ctx)
		if err != nil {
			return nil, fmt.Errorf("read stream position: %w", err)
		}
		res, err := s.build(ctx, req, to)
		if err != nil {
			return nil, err
		}
		if req.Since == nil || req.FullState || !res.IsEmpty() {
			return res, s.addKeyCounts(ctx, req, res)
		}
		remaining := time.Until(deadline)
		if remaining <= 0 || !s.notifier.Wait(ctx, req.UserID, to, remaining) {
			if err = ctx.Err(); err != nil {
				return res, err
			}
			return res, s.addKeyCounts(ctx, req, res)
		}
	}
}

// deviceLists is device_lists for changes in (since, to].
func (s *Syncer) deviceLists(ctx context.Context, userID string, since, to int64) (types.DeviceLists, error) {
	dl, err := s.db.DeviceListChanges(ctx, userID, since, to)
	if err != nil {
		return types.DeviceLists{}, fmt.Errorf("load device list changes: %w", err)
	}
	return types.DeviceLists{Changed: dl.Changed, Left: dl.Left}, nil
}

// KeyChanges answers GET /keys/changes: the device_lists of an incremental /sync from from
// to to (no further than what is committed).
func (s *Syncer) KeyChanges(ctx context.Context, userID string, from, to int64) (types.DeviceLists, error) {
	top, err := s.db.MaxPosition(ctx)
	if err != nil {
		return types.DeviceLists{}, fmt.Errorf("read stream position: %w", err)
	}
	to = min(to, top)
	if from >= to {
		return types.DeviceLists{}, nil
	}
	return s.deviceLists(ctx, userID, from, to)
}

// addKeyCounts fills in the device's one-time key counts and unused fallback key types.
func (s *Syncer) addKeyCounts(ctx context.Context, req *SyncRequest, res *types.SyncResponse) error {
	if s.keys == nil {
		return nil
	}
	counts, err := s.keys.QueryOneTimeKeyCounts(ctx, &uapi.QueryOneTimeKeyCountsRequest{UserID: req.UserID, DeviceID: req.DeviceID})
	if err != nil {
		return fmt.Errorf("count one-time keys: %w", err)
	}
	res.DeviceOneTimeKeysCount = counts.OneTimeKeyCounts
	if counts.UnusedFallbackKeyAlgorithms != nil {
		res.DeviceUnusedFallbackKeyTypes = counts.UnusedFallbackKeyAlgorithms
	}
	return nil
}

// roomPlan is what one room contributes to a sync.
type roomPlan struct {
	roomID string
	kind   string // spec.Join, spec.Invite, spec.Knock, spec.Leave or kindPeek
	after  int64
	upTo   int64
	// full asks for the complete state at the timeline's start, not changes since after.
	full bool
	// newlyJoined marks a room joined since the last sync of an incremental sync.
	newlyJoined bool
	viewer      *viewer
	// filled in by timelines
	page    page
	invite  storage.MemberChange
	limited bool
}

func (s *Syncer) build(ctx context.Context, req *SyncRequest, to int64) (*types.SyncResponse, error) {
	res := types.NewSyncResponse()
	res.NextBatch = types.StreamToken{Position: to}.String()
	since := int64(0)
	if req.Since != nil {
		since = req.Since.Position
		if since >= to && !req.FullState {
			return res, nil
		}
	}
	rooms, err := s.db.MembershipHistory(ctx, req.UserID, to)
	if err != nil {
		return nil, fmt.Errorf("load memberships: %w", err)
	}
	ignored, err := s.ignoredUsers(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	plans, err := s.plan(ctx, req, rooms, ignored, since, to)
	if err != nil {
		return nil, err
	}
	if err = s.fill(ctx, req, plans, res); err != nil {
		return nil, err
	}
	if s.notifier.Changed(storage.StreamAccountData, since) {
		if err = s.addAccountData(ctx, req, rooms, since, to, res); err != nil {
			return nil, err
		}
	}
	if err = s.addEphemeral(ctx, req, rooms, since, to, res); err != nil {
		return nil, err
	}
	if req.Since != nil && (s.notifier.Changed(storage.StreamKeyChanges, since) || s.notifier.Changed(storage.StreamRoomEvents, since)) {
		if res.DeviceLists, err = s.deviceLists(ctx, req.UserID, since, to); err != nil {
			return nil, err
		}
	}
	if changed := s.notifier.Changed(storage.StreamPresence, since); changed || since > 0 && len(newRoomMates(req.UserID, res)) > 0 {
		if err = s.addPresence(ctx, req, since, to, changed, res); err != nil {
			return nil, err
		}
	}
	if !req.WithoutToDevice && s.notifier.Changed(storage.StreamToDevice, since) {
		if err = s.addToDevice(ctx, req, to, ignored, res); err != nil {
			return nil, err
		}
	}
	return res, s.addUnread(ctx, req, rooms, since, to, res)
}

// ignoredUsers are the users of userID's m.ignored_user_list (spec "Ignoring Users"): /sync
// leaves out their non-state events, their invites and their to-device messages. Content
// that does not have the event's shape ignores nobody.
func (s *Syncer) ignoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	raw, err := s.db.GlobalAccountData(ctx, userID, "m.ignored_user_list")
	if err != nil || raw == nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &c) != nil || len(c.IgnoredUsers) == 0 {
		return nil, nil
	}
	out := make(map[string]bool, len(c.IgnoredUsers))
	for u := range c.IgnoredUsers {
		out[u] = true
	}
	return out, nil
}

// plan decides which rooms appear and how. An initial or full-state sync looks at every
// room of the user; an incremental one only at the rooms where the user's membership
// changed since the last sync and at those with new events, so that its cost follows what
// changed, not the number of rooms the user is in.
func (s *Syncer) plan(ctx context.Context, req *SyncRequest, rooms storage.Memberships, ignored map[string]bool, since, to int64) ([]*roomPlan, error) {
	initial := req.Since == nil
	var plans []*roomPlan
	var steady []string
	considered := changedRooms(rooms, since)
	if initial || req.FullState {
		considered = byRoom(rooms.All())
	}
	for roomID, h := range considered {
		if !req.Filter.Room.AllowsRoom(roomID) {
			continue
		}
		now := h.latest()
		v := &viewer{userID: req.UserID, deviceID: req.DeviceID, history: h, current: now.Membership, ignored: ignored}
		p := &roomPlan{roomID: roomID, after: since, upTo: to, viewer: v, invite: now}
		switch now.Membership {
		case spec.Join:
			p.kind = spec.Join
			p.full = initial || req.FullState || h.at(since) != spec.Join
			if !initial && h.at(since) != spec.Join && !req.NewEventsOnly {
				// A room joined since the last sync gets its recent timeline as in an
				// initial sync, not only the events after the since token.
				p.after, p.newlyJoined = types.HistoryStart, true
			}
			if !p.full {
				steady = append(steady, roomID)
				continue
			}
		case spec.Invite, spec.Knock:
			if !initial && now.Position <= since {
				continue
			}
			p.kind = now.Membership
		case spec.Leave, spec.Ban:
			if initial && !req.Filter.Room.IncludeLeave || !initial && now.Position <= since {
				continue
			}
			// A room the user joined and left since the last sync comes with its full
			// state: the client never had it.
			p.kind, p.upTo = spec.Leave, now.Position
			p.full = initial || h.at(since) != spec.Join && h.joinedIn(since, now.Position)
		default:
			continue
		}
		plans = append(plans, p)
	}
	peeks, steadyPeeks, err := s.planPeeks(ctx, req, rooms, ignored, since, to)
	if err != nil {
		return nil, err
	}
	plans = append(plans, peeks...)
	steady = append(steady, steadyPeeks...)
	if initial || req.FullState || !s.notifier.Changed(storage.StreamRoomEvents, since) {
		return plans, nil
	}
	active, err := s.db.RoomsWithEvents(ctx, since, to)
	if err != nil {
		return nil, fmt.Errorf("find active rooms: %w", err)
	}
	isSteady := make(map[string]bool, len(steady))
	for _, roomID := range steady {
		isSteady[roomID] = true
	}
	peeking := make(map[string]bool, len(steadyPeeks))
	for _, roomID := range steadyPeeks {
		peeking[roomID] = true
	}
	for _, roomID := range active {
		h := memberHistory(rooms.Room(roomID))
		_, planned := considered[roomID]
		if !isSteady[roomID] && (planned || h.latest().Membership != spec.Join || !req.Filter.Room.AllowsRoom(roomID)) {
			// Not a room the user stayed joined to (or peeked into) since the last sync:
			// planned above, or none of theirs.
			continue
		}
		v := &viewer{userID: req.UserID, deviceID: req.DeviceID, history: h, current: spec.Join, ignored: ignored}
		kind := spec.Join
		if peeking[roomID] {
			v.current, v.peeking, kind = h.latest().Membership, true, kindPeek
		}
		plans = append(plans, &roomPlan{roomID: roomID, kind: kind, after: since, upTo: to, viewer: v})
	}
	return plans, nil
}

// kindPeek is the roomPlan kind of a room the device peeks into (MSC2753): it is written
// like a joined room, under rooms.peek.
const kindPeek = "peek"

// planPeeks plans the rooms the device peeks into and the user has not joined: a peek
// started since the last sync (or any, in an initial or full-state sync) sends the room
// whole, like a room just joined; the others are steady, in the sync when they have new
// events.
func (s *Syncer) planPeeks(ctx context.Context, req *SyncRequest, rooms storage.Memberships, ignored map[string]bool, since, to int64) ([]*roomPlan, []string, error) {
	peeks, err := s.db.Peeks(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return nil, nil, fmt.Errorf("load peeks: %w", err)
	}
	var plans []*roomPlan
	var steady []string
	for _, pk := range peeks {
		h := memberHistory(rooms.Room(pk.RoomID))
		if pk.Position > to || h.latest().Membership == spec.Join || !req.Filter.Room.AllowsRoom(pk.RoomID) {
			continue
		}
		if req.Since != nil && !req.FullState && pk.Position <= since {
			steady = append(steady, pk.RoomID)
			continue
		}
		v := &viewer{userID: req.UserID, deviceID: req.DeviceID, history: h, current: h.latest().Membership, peeking: true, ignored: ignored}
		p := &roomPlan{roomID: pk.RoomID, kind: kindPeek, after: types.HistoryStart, upTo: to, full: true, newlyJoined: req.Since != nil, viewer: v}
		plans = append(plans, p)
	}
	return plans, steady, nil
}

// fill reads every planned room's timeline, then the state of the rooms that need it in one
// batched query, and writes the rooms into res.
func (s *Syncer) fill(ctx context.Context, req *SyncRequest, plans []*roomPlan, res *types.SyncResponse) error {
	tf := &req.Filter.Room.Timeline
	lazy := tf.LazyLoadMembers || req.Filter.Room.State.LazyLoadMembers
	limit := req.Filter.TimelineLimit()
	var needState []string
	for _, p := range plans {
		if p.kind != spec.Invite && p.kind != spec.Knock {
			if !tf.AllowsRoom(p.roomID) {
				continue
			}
			pg, err := walk(ctx, s.db, p.roomID, p.viewer, &tf.EventFilter, true, p.upTo, p.after, limit)
			if err != nil {
				return err
			}
			p.page, p.limited = pg, pg.more
		}
		if p.kind == spec.Invite || p.kind == spec.Knock || p.full || p.limited || lazy {
			needState = append(needState, p.roomID)
		}
	}
	current, err := s.db.CurrentState(ctx, needState)
	if err != nil {
		return fmt.Errorf("load current state: %w", err)
	}
	for _, p := range plans {
		if err := s.writeRoom(ctx, req, p, current[p.roomID], res); err != nil {
			return err
		}
	}
	return nil
}
