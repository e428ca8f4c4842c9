package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// joinedRoomIDs are the rooms the user is joined to now that the filter lets through.
func joinedRoomIDs(req *SyncRequest, rooms storage.Memberships) []string {
	latest := map[string]string{}
	for _, c := range rooms.All() {
		latest[c.RoomID] = c.Membership
	}
	var out []string
	for roomID, m := range latest {
		if m == spec.Join && req.Filter.Room.AllowsRoom(roomID) {
			out = append(out, roomID)
		}
	}
	return out
}

// ephemeralRooms are the joined rooms that the filters let through and where changed (a
// storage query for the rooms with changes in a position range) reports changes in
// (since, to]. An initial sync takes every joined room instead; an incremental one asks
// changed and looks each room up, so that its cost follows the changes, not the number
// of rooms the user is in.
func ephemeralRooms(ctx context.Context, req *SyncRequest, rooms storage.Memberships, since, to int64,
	changed func(ctx context.Context, after, upTo int64) ([]string, error)) ([]string, error) {
	var candidates []string
	if since <= 0 {
		candidates = joinedRoomIDs(req, rooms)
	} else {
		active, err := changed(ctx, since, to)
		if err != nil {
			return nil, err
		}
		for _, roomID := range active {
			if memberHistory(rooms.Room(roomID)).latest().Membership == spec.Join && req.Filter.Room.AllowsRoom(roomID) {
				candidates = append(candidates, roomID)
			}
		}
	}
	var out []string
	for _, roomID := range candidates {
		if req.Filter.Room.Ephemeral.AllowsRoom(roomID) {
			out = append(out, roomID)
		}
	}
	return out, nil
}

// addEphemeral adds typing and receipts changed in (since, to] to joined rooms (adding a
// room entry when only those changed). An initial sync gets the current typing set of every
// room where anyone typed, even when nobody types any more: a client that starts over (sytest's
// helpers do, after seeing a user typing) learns of the stop there, as no later change will
// report it; an incremental one gets emptied typing sets, so clients clear them.
func (s *Syncer) addEphemeral(ctx context.Context, req *SyncRequest, rooms storage.Memberships, since, to int64, res *types.SyncResponse) error {
	ef := &req.Filter.Room.Ephemeral
	typing := ef.AllowsType("m.typing") && s.notifier.Changed(storage.StreamTyping, since)
	receipts := ef.AllowsType("m.receipt") && s.notifier.Changed(storage.StreamReceipts, since)
	if !typing && !receipts {
		return nil
	}
	counts := map[string]int{}
	limit := ef.LimitOr(math.MaxInt) // no limit set: typing and receipts, two events at most
	add := func(roomID string, ev any) error {
		if counts[roomID] >= limit {
			return nil
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		counts[roomID]++
		jr := joinedRoom(res, roomID)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, b)
		return nil
	}
	if typing {
		roomIDs, err := ephemeralRooms(ctx, req, rooms, since, to, s.db.TypingRooms)
		if err != nil {
			return fmt.Errorf("find rooms with typing: %w", err)
		}
		typing, err := s.db.Typing(ctx, roomIDs, since, to)
		if err != nil {
			return fmt.Errorf("load typing: %w", err)
		}
		now := time.Now().UnixMilli()
		for _, t := range typing {
			users := []string{}
			for _, u := range t.Users {
				if u.ExpiresTS > now {
					users = append(users, u.UserID)
				}
			}
			if err := add(t.RoomID, typingEvent{Type: "m.typing", Content: typingContent{UserIDs: users}}); err != nil {
				return err
			}
		}
	}
	if receipts {
		roomIDs, err := ephemeralRooms(ctx, req, rooms, since, to, s.db.ReceiptRooms)
		if err != nil {
			return fmt.Errorf("find rooms with receipts: %w", err)
		}
		receipts, err := s.db.Receipts(ctx, req.UserID, roomIDs, since, to)
		if err != nil {
			return fmt.Errorf("load receipts: %w", err)
		}
		byRoom := map[string]receiptContent{}
		var order []string
		for _, r := range receipts {
			c := byRoom[r.RoomID]
			if c == nil {
				c = receiptContent{}
				byRoom[r.RoomID] = c
				order = append(order, r.RoomID)
			}
			if c[r.EventID] == nil {
				c[r.EventID] = map[string]map[string]receiptInfo{}
			}
			if c[r.EventID][r.Type] == nil {
				c[r.EventID][r.Type] = map[string]receiptInfo{}
			}
			c[r.EventID][r.Type][r.UserID] = receiptInfo{TS: r.TS, ThreadID: r.ThreadID}
		}
		for _, roomID := range order {
			if err := add(roomID, receiptEvent{Type: "m.receipt", Content: byRoom[roomID]}); err != nil {
				return err
			}
		}
	}
	return nil
}

type typingEvent struct {
	Type    string        `json:"type"`
	Content typingContent `json:"content"`
}

type typingContent struct {
	UserIDs []string `json:"user_ids"`
}

type receiptEvent struct {
	Type    string         `json:"type"`
	Content receiptContent `json:"content"`
}

// receiptContent maps event ID -> receipt type -> user ID -> receipt.
type receiptContent map[string]map[string]map[string]receiptInfo

type receiptInfo struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// addUnread sets the notification counts of every joined room in the response from what
// the pushserver announced, and adds the joined rooms whose counts changed in (since, to].
// With the timeline filter's unread_thread_notifications, unread_notifications counts the
// main timeline and unread_thread_notifications each thread; without, every thread
// counts in unread_notifications.
func (s *Syncer) addUnread(ctx context.Context, req *SyncRequest, rooms storage.Memberships, since, to int64, res *types.SyncResponse) error {
	if since > 0 && s.notifier.Changed(storage.StreamNotificationCounts, since) {
		changed, err := s.db.NotificationCountRooms(ctx, req.UserID, since, to)
		if err != nil {
			return err
		}
		for _, roomID := range changed {
			if memberHistory(rooms.Room(roomID)).latest().Membership == spec.Join && req.Filter.Room.AllowsRoom(roomID) {
				joinedRoom(res, roomID)
			}
		}
	}
	if len(res.Rooms.Join) == 0 {
		return nil
	}
	roomIDs := make([]string, 0, len(res.Rooms.Join))
	for roomID := range res.Rooms.Join {
		roomIDs = append(roomIDs, roomID)
	}
	counts, err := s.db.NotificationCounts(ctx, req.UserID, roomIDs)
	if err != nil {
		return fmt.Errorf("load notification counts: %w", err)
	}
	threaded := req.Filter.Room.Timeline.UnreadThreadNotifications
	for roomID, threads := range counts {
		jr := res.Rooms.Join[roomID]
		for threadID, c := range threads {
			u := types.UnreadNotifications{NotificationCount: c.NotificationCount, HighlightCount: c.HighlightCount}
			if !threaded || threadID == mainThread {
				jr.UnreadNotifications.NotificationCount += u.NotificationCount
				jr.UnreadNotifications.HighlightCount += u.HighlightCount
				continue
			}
			if jr.UnreadThreadNotifications == nil {
				jr.UnreadThreadNotifications = map[string]types.UnreadNotifications{}
			}
			jr.UnreadThreadNotifications[threadID] = u
		}
	}
	return nil
}

// mainThread is the thread ID of the main timeline in the pushserver's counts.
const mainThread = "main"

// addPresence adds the presence changed in (since, to] (when changed says the presence
// stream moved) of the user and of everyone who shares a joined room with them, and in an
// incremental sync the presence of users who newly share a room with the user.
func (s *Syncer) addPresence(ctx context.Context, req *SyncRequest, since, to int64, changed bool, res *types.SyncResponse) error {
	if !req.Filter.Presence.AllowsType("m.presence") {
		return nil
	}
	var presence []storage.Presence
	if changed {
		var err error
		if presence, err = s.db.Presence(ctx, req.UserID, since, to); err != nil {
			return fmt.Errorf("load presence: %w", err)
		}
	}
	if since > 0 {
		// Users who newly share a room with the user (they joined one of the user's rooms, or
		// the user joined theirs) come with their presence, changed or not.
		have := map[string]bool{}
		for _, p := range presence {
			have[p.UserID] = true
		}
		var ids []string
		for _, u := range newRoomMates(req.UserID, res) {
			if !have[u] {
				ids = append(ids, u)
			}
		}
		more, err := s.db.PresenceOf(ctx, ids, to)
		if err != nil {
			return fmt.Errorf("load presence of new room mates: %w", err)
		}
		presence = append(presence, more...)
		for _, p := range more {
			have[p.UserID] = true
		}
		for _, u := range ids {
			if !have[u] {
				// Nobody has heard from them: offline, as the spec's default presence is.
				presence = append(presence, storage.Presence{UserID: u, Presence: presenceOffline})
			}
		}
	}
	writePresence(req, presence, res)
	return nil
}

// presenceOffline is the presence of a user nobody has heard from.
const presenceOffline = "offline"

// newRoomMates are the users whose joins the response's joined rooms carry, in their
// timelines or state: members of rooms the user joined, and users who joined the user's.
func newRoomMates(userID string, res *types.SyncResponse) []string {
	seen := map[string]bool{userID: true}
	var out []string
	for _, jr := range res.Rooms.Join {
		for _, evs := range [][]clientevent.Event{jr.State.Events, jr.Timeline.Events} {
			for _, e := range evs {
				if e.Type != spec.MRoomMember || e.StateKey == nil || seen[*e.StateKey] {
					continue
				}
				var c struct {
					Membership string `json:"membership"`
				}
				if json.Unmarshal(e.Content, &c) == nil && c.Membership == spec.Join {
					seen[*e.StateKey] = true
					out = append(out, *e.StateKey)
				}
			}
		}
	}
	return out
}

// writePresence adds the presence events the filter allows to res.
func writePresence(req *SyncRequest, presence []storage.Presence, res *types.SyncResponse) {
	pf := &req.Filter.Presence
	now := time.Now().UnixMilli()
	limit := pf.LimitOr(math.MaxInt) // no limit set: everyone who changed, a number the client does not choose
	for _, p := range presence {
		if !pf.Allows("m.presence", p.UserID) {
			continue
		}
		if len(res.Presence.Events) >= limit {
			break
		}
		c := types.PresenceContent{Presence: p.Presence, CurrentlyActive: p.CurrentlyActive, StatusMsg: p.StatusMsg}
		if p.LastActiveTS > 0 {
			c.LastActiveAgo = max(now-p.LastActiveTS, 0)
		}
		res.Presence.Events = append(res.Presence.Events, types.PresenceEvent{Type: "m.presence", Sender: p.UserID, Content: c})
	}
}

// addToDevice adds the device's unacknowledged send-to-device messages up to to.
func (s *Syncer) addToDevice(ctx context.Context, req *SyncRequest, to int64, ignored map[string]bool, res *types.SyncResponse) error {
	msgs, err := s.db.ToDevice(ctx, req.UserID, req.DeviceID, to)
	if err != nil {
		return fmt.Errorf("load to-device messages: %w", err)
	}
	for _, m := range msgs {
		if ignored[m.Sender] {
			continue // acknowledged with the rest: an ignored user's messages are dropped
		}
		res.ToDevice.Events = append(res.ToDevice.Events, types.ToDeviceEvent{Type: m.Type, Sender: m.Sender, Content: m.Content})
	}
	return nil
}
