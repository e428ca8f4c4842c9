package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/eventlog"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
)

// EDU types (server-server API, "EDUs").
const (
	EDUTyping         = "m.typing"
	EDUReceipt        = "m.receipt"
	EDUPresence       = "m.presence"
	EDUDirectToDevice = "m.direct_to_device"
)

// Typing consumes OutputTypingEvent. The topic carries a room's complete set; federation
// wants a change per user, so Typing keeps each room's last set of our typing users (in
// memory: typing is ephemeral) and queues an m.typing EDU, to every other server in the
// room, for each of our users who started, renewed (a new expiry) or stopped typing. After a
// restart the first set of a room repeats who types, and stops nobody who stopped meanwhile:
// receivers time typing out themselves.
type Typing struct {
	s     *Shared
	mu    sync.Mutex
	rooms map[string]map[string]int64 // room -> our typing user -> expiry
}

// NewTyping builds the OutputTypingEvent handler.
func NewTyping(s *Shared) *Typing {
	return &Typing{s: s, rooms: map[string]map[string]int64{}}
}

type typingContent struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing bool   `json:"typing"`
}

// Prepare is the consumer's first phase (see Shared.Prepare). The in-memory sets change
// only once the batch has committed, so a batch that fails anywhere, its commit included,
// is diffed again from the same sets.
func (t *Typing) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	var staged map[string]map[string]int64
	step, err := t.s.Prepare(func(ctx context.Context, recs []eventlog.Record, lk *lookups) (applyFunc, error) {
		var outs []eduapi.OutputTypingEvent
		var roomIDs []string
		for _, rec := range recs {
			var o eduapi.OutputTypingEvent
			if err := decode(rec, &o); err != nil {
				return nil, err
			}
			if o.RoomID == "" {
				return nil, eventlog.Poison(errors.New("typing output without a room"))
			}
			outs = append(outs, o)
			roomIDs = append(roomIDs, o.RoomID)
		}
		if err := t.s.loadRooms(ctx, lk, roomIDs); err != nil {
			return nil, err
		}
		return func(ctx context.Context, tx *sql.Tx, lk *lookups) ([]string, error) {
			var woken []string
			var err error
			staged, woken, err = t.queue(ctx, tx, lk, outs)
			return woken, err
		}, nil
	})(ctx, recs)
	if err != nil {
		return step, err
	}
	wake := step.After
	step.After = func(ctx context.Context) {
		t.keep(staged)
		wake(ctx)
	}
	return step, nil
}

// keep makes the committed batch's sets the rooms' sets.
func (t *Typing) keep(staged map[string]map[string]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for room, cur := range staged {
		if len(cur) == 0 {
			delete(t.rooms, room)
		} else {
			t.rooms[room] = cur
		}
	}
}

// queue diffs each room's new set against the last one and queues the changes; it returns
// the batch's sets and the destinations it queued for.
func (t *Typing) queue(ctx context.Context, tx *sql.Tx, lk *lookups, outs []eduapi.OutputTypingEvent) (map[string]map[string]int64, []string, error) {
	now := time.Now().UnixMilli()
	staged := map[string]map[string]int64{}
	var woken []string
	for _, o := range outs {
		prev, ok := staged[o.RoomID]
		if !ok {
			t.mu.Lock()
			prev = t.rooms[o.RoomID]
			t.mu.Unlock()
		}
		cur := map[string]int64{}
		var changes []typingContent
		for _, u := range o.Users {
			if u.ExpiresTS <= now || !t.s.isLocal(u.UserID) {
				continue
			}
			cur[u.UserID] = u.ExpiresTS
			if prev[u.UserID] != u.ExpiresTS {
				changes = append(changes, typingContent{RoomID: o.RoomID, UserID: u.UserID, Typing: true})
			}
		}
		for u := range prev {
			if _, still := cur[u]; !still {
				changes = append(changes, typingContent{RoomID: o.RoomID, UserID: u, Typing: false})
			}
		}
		staged[o.RoomID] = cur
		if len(changes) == 0 {
			continue
		}
		dests, err := t.s.roomDestinations(ctx, tx, lk, o.RoomID)
		if err != nil {
			return nil, nil, err
		}
		for _, c := range changes {
			if err := t.s.queueEDU(ctx, tx, dests, EDUTyping, c); err != nil {
				return nil, nil, err
			}
		}
		woken = append(woken, dests...)
	}
	return staged, woken, nil
}

// Receipts consumes OutputReceiptEvent: each public read receipt of one of our users is
// queued as an m.receipt EDU for every other server in the room. Private receipts
// (m.read.private) never leave the server.
type Receipts struct {
	s *Shared
}

// NewReceipts builds the OutputReceiptEvent handler.
func NewReceipts(s *Shared) *Receipts {
	return &Receipts{s: s}
}

type receiptData struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

type userReceipt struct {
	Data     receiptData `json:"data"`
	EventIDs []string    `json:"event_ids"`
}

// Prepare is the consumer's first phase (see Shared.Prepare).
func (r *Receipts) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	return r.s.Prepare(r.prepare)(ctx, recs)
}

func (r *Receipts) prepare(ctx context.Context, recs []eventlog.Record, lk *lookups) (applyFunc, error) {
	var outs []receiptapi.OutputReceiptEvent
	var roomIDs []string
	for _, rec := range recs {
		var o receiptapi.OutputReceiptEvent
		if err := decode(rec, &o); err != nil {
			return nil, err
		}
		if o.Type != receiptapi.ReceiptRead || !r.s.isLocal(o.UserID) {
			continue
		}
		outs = append(outs, o)
		roomIDs = append(roomIDs, o.RoomID)
	}
	if err := r.s.loadRooms(ctx, lk, roomIDs); err != nil {
		return nil, err
	}
	return func(ctx context.Context, tx *sql.Tx, lk *lookups) ([]string, error) {
		var woken []string
		for _, o := range outs {
			dests, err := r.s.roomDestinations(ctx, tx, lk, o.RoomID)
			if err != nil {
				return nil, err
			}
			content := map[string]map[string]map[string]userReceipt{o.RoomID: {receiptapi.ReceiptRead: {o.UserID: {
				Data: receiptData{TS: o.TS, ThreadID: o.ThreadID}, EventIDs: []string{o.EventID}}}}}
			if err := r.s.queueEDU(ctx, tx, dests, EDUReceipt, content); err != nil {
				return nil, err
			}
			woken = append(woken, dests...)
		}
		return woken, nil
	}, nil
}

// Presence consumes OutputPresenceEvent: each change of one of our users' presence is
// queued as an m.presence EDU for every other server sharing a room with them. The rooms
// come from the roomserver (QueryRoomsForUser), so a room the sender never saw an event of
// still counts.
type Presence struct {
	s *Shared
	// send is federation_sender.send_presence: when off, records are consumed and dropped.
	send bool
}

// NewPresence builds the OutputPresenceEvent handler; send false drops every record.
func NewPresence(s *Shared, send bool) *Presence {
	return &Presence{s: s, send: send}
}

type presenceUpdate struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	LastActiveAgo   int64   `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active"`
	StatusMsg       *string `json:"status_msg,omitempty"`
}

// updateOf is the m.presence push entry of p at now (Unix ms).
func updateOf(p *presenceapi.Presence, now int64) presenceUpdate {
	return presenceUpdate{UserID: p.UserID, Presence: p.Presence, LastActiveAgo: max(now-p.LastActiveTS, 0),
		CurrentlyActive: p.CurrentlyActive, StatusMsg: p.StatusMsg}
}

// queuePresence queues one m.presence EDU with the current presence of those of users who
// are not offline for dests; it returns dests when it queued one.
func (s *Shared) queuePresence(ctx context.Context, tx *sql.Tx, dests, users []string) ([]string, error) {
	now := time.Now().UnixMilli()
	var push []presenceUpdate
	for _, u := range users {
		res, err := s.Presence.QueryPresence(ctx, &presenceapi.QueryPresenceRequest{UserID: u})
		if err != nil {
			return nil, eventlog.Retry(fmt.Errorf("query presence of %s: %w", u, err))
		}
		if res.Presence.Presence != presenceapi.Offline {
			push = append(push, updateOf(&res.Presence, now))
		}
	}
	if len(push) == 0 {
		return nil, nil
	}
	if err := s.queueEDU(ctx, tx, dests, EDUPresence, map[string][]presenceUpdate{"push": push}); err != nil {
		return nil, err
	}
	return dests, nil
}

// Prepare is the consumer's first phase (see Shared.Prepare).
func (p *Presence) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	if !p.send {
		return eventlog.Step{}, nil
	}
	return p.s.Prepare(p.prepare)(ctx, recs)
}

func (p *Presence) prepare(ctx context.Context, recs []eventlog.Record, lk *lookups) (applyFunc, error) {
	var outs []presenceapi.OutputPresenceEvent
	for _, rec := range recs {
		var o presenceapi.OutputPresenceEvent
		if err := decode(rec, &o); err != nil {
			return nil, err
		}
		if !p.s.isLocal(o.UserID) {
			continue
		}
		if err := p.s.loadUserRooms(ctx, lk, o.UserID); err != nil {
			return nil, err
		}
		outs = append(outs, o)
	}
	return func(ctx context.Context, tx *sql.Tx, lk *lookups) ([]string, error) {
		var woken []string
		for _, o := range outs {
			dests, err := p.s.serversSharingRooms(ctx, tx, lk, o.UserID)
			if err != nil {
				return nil, err
			}
			content := map[string][]presenceUpdate{"push": {updateOf(&o.Presence, time.Now().UnixMilli())}}
			if err := p.s.queueEDU(ctx, tx, dests, EDUPresence, content); err != nil {
				return nil, err
			}
			woken = append(woken, dests...)
		}
		return woken, nil
	}, nil
}

// ToDevice consumes OutputSendToDeviceEvent: a message from one of our users to another
// server's user is queued as an m.direct_to_device EDU for that server, with the eduserver's
// message ID, which the receiver dedupes on.
type ToDevice struct {
	s *Shared
}

// NewToDevice builds the OutputSendToDeviceEvent handler.
func NewToDevice(s *Shared) *ToDevice {
	return &ToDevice{s: s}
}

type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// Prepare is the consumer's first phase (see Shared.Prepare).
func (t *ToDevice) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	return t.s.Prepare(t.prepare)(ctx, recs)
}

func (t *ToDevice) prepare(_ context.Context, recs []eventlog.Record, _ *lookups) (applyFunc, error) {
	var outs []eduapi.OutputSendToDeviceEvent
	for _, rec := range recs {
		var o eduapi.OutputSendToDeviceEvent
		if err := decode(rec, &o); err != nil {
			return nil, err
		}
		outs = append(outs, o)
	}
	return func(ctx context.Context, tx *sql.Tx, _ *lookups) ([]string, error) {
		var woken []string
		for _, o := range outs {
			dest := serverOf(o.UserID)
			if !t.s.isLocal(o.Sender) || dest == "" || dest == string(t.s.ServerName) {
				continue
			}
			content := directToDevice{Sender: o.Sender, Type: o.Type, MessageID: o.MessageID,
				Messages: map[string]map[string]json.RawMessage{o.UserID: {o.DeviceID: o.Content}}}
			if err := t.s.queueEDU(ctx, tx, []string{dest}, EDUDirectToDevice, content); err != nil {
				return nil, err
			}
			woken = append(woken, dest)
		}
		return woken, nil
	}, nil
}

// serversSharingRooms is every other server in a room our user is joined to, the rooms
// fetched in the first phase (loadUserRooms).
func (s *Shared) serversSharingRooms(ctx context.Context, tx *sql.Tx, lk *lookups, userID string) ([]string, error) {
	unknown, err := s.DB.UnknownRooms(ctx, tx, lk.userRooms[userID])
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	for _, roomID := range unknown {
		if err := s.ensureRoom(ctx, tx, lk, roomID); err != nil {
			return nil, err
		}
	}
	servers, err := s.DB.ServersSharingRooms(ctx, tx, userID)
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	return s.remote(servers), nil
}
