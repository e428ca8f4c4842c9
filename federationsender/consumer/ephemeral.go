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
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
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
	s *Shared
	// wakes gives the handler its Applied: the queues the committed batch added to wake.
	*wakes
	mu    sync.Mutex
	rooms map[string]map[string]int64 // room -> our typing user -> expiry
	// staged are, per partition, the sets of the batch being applied: they replace rooms'
	// only once the batch has committed (Applied), so a batch that fails anywhere, its
	// commit included, is diffed again from the same sets.
	staged map[int32]map[string]map[string]int64
}

// NewTyping builds the OutputTypingEvent handler.
func NewTyping(s *Shared) *Typing {
	return &Typing{s: s, wakes: newWakes(s.Queues), rooms: map[string]map[string]int64{}, staged: map[int32]map[string]map[string]int64{}}
}

// Applied keeps the committed batch's sets and wakes the queues it added to.
func (t *Typing) Applied(partition int32, next int64) {
	t.mu.Lock()
	for room, cur := range t.staged[partition] {
		if len(cur) == 0 {
			delete(t.rooms, room)
		} else {
			t.rooms[room] = cur
		}
	}
	delete(t.staged, partition)
	t.mu.Unlock()
	t.wakes.Applied(partition, next)
}

type typingContent struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing bool   `json:"typing"`
}

// Handle implements eventlog.Consumer.Handle. The in-memory sets change only once the batch
// has committed (Applied).
func (t *Typing) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	now := time.Now().UnixMilli()
	staged := map[string]map[string]int64{}
	var woken []string
	for _, rec := range recs {
		var o eduapi.OutputTypingEvent
		if err := decode(rec, &o); err != nil {
			return err
		}
		if o.RoomID == "" {
			return errors.New("typing output without a room")
		}
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
		dests, err := t.s.roomDestinations(ctx, tx, o.RoomID)
		if err != nil {
			return err
		}
		for _, c := range changes {
			if err := t.s.queueEDU(ctx, tx, dests, EDUTyping, c); err != nil {
				return err
			}
		}
		woken = append(woken, dests...)
	}
	if len(recs) > 0 {
		t.mu.Lock()
		t.staged[recs[0].Partition] = staged
		t.mu.Unlock()
	}
	t.wakes.add(recs, woken)
	return nil
}

// Receipts consumes OutputReceiptEvent: each public read receipt of one of our users is
// queued as an m.receipt EDU for every other server in the room. Private receipts
// (m.read.private) never leave the server.
type Receipts struct {
	s *Shared
	// wakes gives the handler its Applied: the queues the committed batch added to wake.
	*wakes
}

// NewReceipts builds the OutputReceiptEvent handler.
func NewReceipts(s *Shared) *Receipts {
	return &Receipts{s: s, wakes: newWakes(s.Queues)}
}

type receiptData struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

type userReceipt struct {
	Data     receiptData `json:"data"`
	EventIDs []string    `json:"event_ids"`
}

// Handle implements eventlog.Consumer.Handle.
func (r *Receipts) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	var woken []string
	for _, rec := range recs {
		var o receiptapi.OutputReceiptEvent
		if err := decode(rec, &o); err != nil {
			return err
		}
		if o.Type != receiptapi.ReceiptRead || !r.s.isLocal(o.UserID) {
			continue
		}
		dests, err := r.s.roomDestinations(ctx, tx, o.RoomID)
		if err != nil {
			return err
		}
		content := map[string]map[string]map[string]userReceipt{o.RoomID: {receiptapi.ReceiptRead: {o.UserID: {
			Data: receiptData{TS: o.TS, ThreadID: o.ThreadID}, EventIDs: []string{o.EventID}}}}}
		if err := r.s.queueEDU(ctx, tx, dests, EDUReceipt, content); err != nil {
			return err
		}
		woken = append(woken, dests...)
	}
	r.wakes.add(recs, woken)
	return nil
}

// Presence consumes OutputPresenceEvent: each change of one of our users' presence is
// queued as an m.presence EDU for every other server sharing a room with them. The rooms
// come from the roomserver (QueryRoomsForUser), so a room the sender never saw an event of
// still counts.
type Presence struct {
	s *Shared
	// wakes gives the handler its Applied: the queues the committed batch added to wake.
	*wakes
	// send is federation_sender.send_presence: when off, records are consumed and dropped.
	send bool
}

// NewPresence builds the OutputPresenceEvent handler; send false drops every record.
func NewPresence(s *Shared, send bool) *Presence {
	return &Presence{s: s, wakes: newWakes(s.Queues), send: send}
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

// Handle implements eventlog.Consumer.Handle.
func (p *Presence) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	if !p.send {
		return nil
	}
	var woken []string
	for _, rec := range recs {
		var o presenceapi.OutputPresenceEvent
		if err := decode(rec, &o); err != nil {
			return err
		}
		if !p.s.isLocal(o.UserID) {
			continue
		}
		dests, err := p.s.serversSharingRooms(ctx, tx, o.UserID)
		if err != nil {
			return err
		}
		content := map[string][]presenceUpdate{"push": {updateOf(&o.Presence, time.Now().UnixMilli())}}
		if err := p.s.queueEDU(ctx, tx, dests, EDUPresence, content); err != nil {
			return err
		}
		woken = append(woken, dests...)
	}
	p.wakes.add(recs, woken)
	return nil
}

// ToDevice consumes OutputSendToDeviceEvent: a message from one of our users to another
// server's user is queued as an m.direct_to_device EDU for that server, with the eduserver's
// message ID, which the receiver dedupes on.
type ToDevice struct {
	s *Shared
	// wakes gives the handler its Applied: the queues the committed batch added to wake.
	*wakes
}

// NewToDevice builds the OutputSendToDeviceEvent handler.
func NewToDevice(s *Shared) *ToDevice {
	return &ToDevice{s: s, wakes: newWakes(s.Queues)}
}

type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// Handle implements eventlog.Consumer.Handle.
func (t *ToDevice) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	var woken []string
	for _, rec := range recs {
		var o eduapi.OutputSendToDeviceEvent
		if err := decode(rec, &o); err != nil {
			return err
		}
		dest := serverOf(o.UserID)
		if !t.s.isLocal(o.Sender) || dest == "" || dest == string(t.s.ServerName) {
			continue
		}
		content := directToDevice{Sender: o.Sender, Type: o.Type, MessageID: o.MessageID,
			Messages: map[string]map[string]json.RawMessage{o.UserID: {o.DeviceID: o.Content}}}
		if err := t.s.queueEDU(ctx, tx, []string{dest}, EDUDirectToDevice, content); err != nil {
			return err
		}
		woken = append(woken, dest)
	}
	t.wakes.add(recs, woken)
	return nil
}

// serversSharingRooms is every other server in a room our user is joined to. The rooms come
// from the roomserver (QueryRoomsForUser), so a room the sender never saw an event of still
// counts.
func (s *Shared) serversSharingRooms(ctx context.Context, tx *sql.Tx, userID string) ([]string, error) {
	rooms, err := s.Rooms.QueryRoomsForUser(ctx, &rsapi.QueryRoomsForUserRequest{UserID: userID, Membership: "join"})
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	unknown, err := s.DB.UnknownRooms(ctx, tx, rooms.RoomIDs)
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	for _, roomID := range unknown {
		if err := s.ensureRoom(ctx, tx, roomID); err != nil {
			return nil, err
		}
	}
	servers, err := s.DB.ServersSharingRooms(ctx, tx, userID)
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	return s.remote(servers), nil
}
