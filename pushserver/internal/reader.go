// Package internal is the push server's logic: the push reader, which evaluates every
// room event against the push rules of the room's local members and records the
// notifications, and the consumers that keep what it needs (push rules, receipts).
package internal

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/pushrules"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// clientDataWait bounds how long the reader waits for push rule changes written before
// a batch of events to be applied.
const clientDataWait = 10 * time.Second

// Reader is the push reader: the Prepare of the OutputRoomEvent consumer.
type Reader struct {
	DB         storage.Database
	Rooms      rsapi.QueryAPI
	ServerName string
	Evaluator  *pushrules.Evaluator
	Rules      *RuleCache
	// ClientData is the progress of the push rules consumer; past clientDataWait the
	// reader goes on with the rules applied so far.
	ClientData *eventlog.Progress
	// Notified, if set, is called inside the transaction with the notifications recorded.
	Notified func(ctx context.Context, tx *sql.Tx, ns []storage.Notification) error
	// Cleared, if set, is called inside the transaction with the (room, user) pairs whose
	// earlier notifications a join marked read: counts start at a user's join (an invite's
	// notification is not unread in the room joined), as Synapse counts them.
	Cleared func(ctx context.Context, tx *sql.Tx, roomUsers map[string][]string) error
	Metrics *Metrics
	Logger  *logrus.Entry
}

// newEvent is an event to evaluate with the state it adds.
type newEvent struct {
	event gomatrixserverlib.PDU
	added []gomatrixserverlib.PDU
}

// maxTxNotifications bounds the reader's transactions: one takes the events of a batch
// while the joined members of their rooms (whom each event may notify) add up to no more
// than this (and at least one event), and leaves the rest of the batch to the next, with
// its own offset. A batch of 256 messages was one transaction of every notification,
// unread count and queued push they made (5,000 of each for a room of 20, 256,000 for a
// room of 1,000), seconds long, and on SQLite, which has one writer, the deliverer's
// commits waited for it. A bound of 1,000 made every message to a room of 1,000 a
// transaction of its own, which reads the room and 999 members' rules again: on
// PostgreSQL the reader then evaluated 1.9 messages a second against 5.8-6.1 with no
// bound, and 6.7 with this one (BenchmarkPushReader).
const maxTxNotifications = 10000

// Prepare implements eventlog.Consumer.Prepare: it takes the records the transaction's
// bound allows (maxTxNotifications), resolves the state each event adds, fetches the
// state of rooms the reader does not know yet, and waits for earlier push rule changes,
// all before the transaction opens.
func (r *Reader) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	var events []newEvent
	boot := map[string][]gomatrixserverlib.PDU{}
	joined := map[string]int{}
	take, total := len(recs), 0
	// The records are decoded a chunk at a time, as far as the bound takes them: the rest
	// of the batch is prepared again for the next transaction.
chunks:
	for start := 0; start < len(recs); start += prepareChunk {
		news, err := r.decodeNew(ctx, recs, start, min(start+prepareChunk, len(recs)), joined)
		if err != nil {
			return eventlog.Step{}, err
		}
		for _, n := range news {
			ev := n.out.Event.PDU
			roomID := ev.RoomID().String()
			members, known := joined[roomID]
			var state []gomatrixserverlib.PDU
			if !known {
				if state, err = r.roomStateAt(ctx, roomID, ev.EventID()); err != nil {
					return eventlog.Step{}, err
				}
				members = joinedIn(state)
			}
			if len(events) > 0 && total+members > maxTxNotifications {
				take = n.i
				break chunks
			}
			if !known {
				boot[roomID], joined[roomID] = state, members
			}
			total += members
			added, unknown, err := n.out.AddedState(ctx, r.Rooms)
			if err != nil {
				return eventlog.Step{}, eventlog.Retry(err)
			}
			for _, id := range unknown {
				r.Logger.WithFields(logrus.Fields{"room_id": roomID, "event_id": id}).Warn("added state event unknown to the roomserver; skipped")
			}
			events = append(events, newEvent{event: ev, added: added})
		}
	}
	if len(events) == 0 {
		return eventlog.Step{}, nil
	}
	if err := r.ClientData.CatchUp(ctx, clientDataWait); err != nil && !errors.Is(err, eventlog.ErrBehind) {
		return eventlog.Step{}, eventlog.Retry(err)
	}
	return eventlog.Step{Take: take, Apply: func(ctx context.Context, tx *sql.Tx) error { return r.apply(ctx, tx, events, boot) }}, nil
}

// prepareChunk is how many records Prepare decodes at a time.
const prepareChunk = 32

// newRecord is a new room event of a batch and its index in the batch.
type newRecord struct {
	out *rsapi.OutputNewRoomEvent
	i   int
}

// decodeNew decodes recs[from:to] and returns their new room events; it adds to joined the
// joined-member counts of their rooms that it lacks and the database knows.
func (r *Reader) decodeNew(ctx context.Context, recs []eventlog.Record, from, to int, joined map[string]int) ([]newRecord, error) {
	var news []newRecord
	var roomIDs []string
	seen := map[string]bool{}
	for i := from; i < to; i++ {
		var out rsapi.OutputRoomEvent
		if err := json.Unmarshal(recs[i].Value, &out); err != nil {
			return nil, eventlog.Poison(fmt.Errorf("decode output room event: %w", err))
		}
		if out.Type != rsapi.OutputTypeNewRoomEvent || out.NewRoomEvent == nil || out.NewRoomEvent.Event.PDU == nil {
			continue
		}
		news = append(news, newRecord{out: out.NewRoomEvent, i: i})
		roomID := out.NewRoomEvent.Event.PDU.RoomID().String()
		if _, ok := joined[roomID]; !ok && !seen[roomID] {
			seen[roomID] = true
			roomIDs = append(roomIDs, roomID)
		}
	}
	if len(roomIDs) == 0 {
		return news, nil
	}
	counts, err := r.DB.JoinedCounts(ctx, roomIDs)
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	for id, n := range counts {
		joined[id] = n
	}
	return news, nil
}

// roomStateAt is the state of a room the reader does not know yet at its first event.
func (r *Reader) roomStateAt(ctx context.Context, roomID, eventID string) ([]gomatrixserverlib.PDU, error) {
	res, err := r.Rooms.QueryStateAtEvent(ctx, &rsapi.QueryStateAtEventRequest{RoomID: roomID, EventID: eventID})
	if err != nil {
		return nil, eventlog.Retry(fmt.Errorf("load state of %s: %w", roomID, err))
	}
	state := make([]gomatrixserverlib.PDU, 0, len(res.StateEvents))
	for _, e := range res.StateEvents {
		state = append(state, e.PDU)
	}
	return state, nil
}

// joinedIn is the number of joined members in state.
func joinedIn(state []gomatrixserverlib.PDU) int {
	members, _ := stateOf(state)
	n := 0
	for _, m := range members {
		if m.Membership == "join" {
			n++
		}
	}
	return n
}

// batchState is what the events of one batch share: each room's state, read once and
// then kept up to date as the batch's events change it, and the stored push rules read so
// far. A batch of a room's messages (a reader behind the senders) reads the room's
// thousand members once, not once per message.
type batchState struct {
	rooms map[string]*storage.RoomState
	rules map[string]json.RawMessage
	read  map[string]bool // the users whose stored rules were read
}

func newBatchState() *batchState {
	return &batchState{rooms: map[string]*storage.RoomState{}, rules: map[string]json.RawMessage{}, read: map[string]bool{}}
}

// roomState is the room's state as the batch's events so far left it.
func (r *Reader) roomState(ctx context.Context, tx *sql.Tx, b *batchState, roomID string) (*storage.RoomState, error) {
	if st, ok := b.rooms[roomID]; ok {
		return st, nil
	}
	st, err := r.DB.RoomState(ctx, tx, roomID)
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	b.rooms[roomID] = st
	return st, nil
}

// changed applies the memberships and power levels an event set (and SetMember and
// SetPowerLevels stored) to the room's state in b.
func (b *batchState) changed(roomID string, members []storage.Member, powerLevels json.RawMessage) {
	st, ok := b.rooms[roomID]
	if !ok {
		return
	}
	for _, m := range members {
		st.Joined = slices.DeleteFunc(st.Joined, func(j storage.Member) bool { return j.UserID == m.UserID })
		if m.Membership == "join" {
			st.Joined = append(st.Joined, storage.Member{UserID: m.UserID, Membership: m.Membership, DisplayName: m.DisplayName})
		}
	}
	if powerLevels != nil {
		st.PowerLevels = powerLevels
	}
}

// pushRules are the stored push rules of (at least) userIDs, read once per batch.
func (r *Reader) pushRules(ctx context.Context, tx *sql.Tx, b *batchState, userIDs []string) (map[string]json.RawMessage, error) {
	var missing []string
	for _, u := range userIDs {
		if !b.read[u] {
			missing = append(missing, u)
		}
	}
	if len(missing) == 0 {
		return b.rules, nil
	}
	stored, err := r.DB.PushRules(ctx, tx, missing)
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	for _, u := range missing {
		b.read[u] = true
		if content, ok := stored[u]; ok {
			b.rules[u] = content
		}
	}
	return b.rules, nil
}

func (r *Reader) apply(ctx context.Context, tx *sql.Tx, events []newEvent, boot map[string][]gomatrixserverlib.PDU) error {
	var all, joins []storage.Notification
	b := newBatchState()
	for _, ne := range events {
		roomID := ne.event.RoomID().String()
		if state, ok := boot[roomID]; ok {
			members, pl := stateOf(state)
			if err := r.DB.AddRoom(ctx, tx, roomID, members, pl); err != nil {
				return eventlog.Retry(err)
			}
			delete(boot, roomID)
			delete(b.rooms, roomID)
		}
		pos, isNew, err := r.DB.AddEvent(ctx, tx, ne.event.EventID(), int64(ne.event.OriginServerTS()))
		if err != nil {
			return eventlog.Retry(err)
		}
		if !isNew {
			continue
		}
		ns, err := r.evaluate(ctx, tx, b, ne.event, pos)
		if err != nil {
			return err
		}
		all = append(all, ns...)
		members, pl := stateOf(ne.added)
		newJoins, err := r.newLocalJoins(ctx, tx, b, roomID, members)
		if err != nil {
			return err
		}
		for _, u := range newJoins {
			joins = append(joins, storage.Notification{UserID: u, RoomID: roomID, Pos: pos})
		}
		for _, m := range members {
			if err := r.DB.SetMember(ctx, tx, roomID, m); err != nil {
				return eventlog.Retry(err)
			}
		}
		if pl != nil {
			if err := r.DB.SetPowerLevels(ctx, tx, roomID, pl); err != nil {
				return eventlog.Retry(err)
			}
		}
		b.changed(roomID, members, pl)
	}
	if len(all) > 0 {
		if err := r.DB.AddNotifications(ctx, tx, all); err != nil {
			return eventlog.Retry(err)
		}
		r.Metrics.notified(len(all))
		if r.Notified != nil {
			if err := r.Notified(ctx, tx, all); err != nil {
				return err
			}
		}
	}
	var cleared []storage.Notification
	for _, j := range joins {
		changed, err := r.DB.MarkRead(ctx, tx, j.UserID, j.RoomID, "", j.Pos)
		if err != nil {
			return eventlog.Retry(err)
		}
		if changed {
			cleared = append(cleared, j)
		}
	}
	if len(cleared) > 0 && r.Cleared != nil {
		return r.Cleared(ctx, tx, ByRoom(cleared))
	}
	return nil
}

// newLocalJoins are the local users members makes joined who were not joined before (a
// profile change of a joined member is no join).
func (r *Reader) newLocalJoins(ctx context.Context, tx *sql.Tx, b *batchState, roomID string, members []storage.Member) ([]string, error) {
	var candidates []string
	for _, m := range members {
		if m.Membership == "join" && strings.HasSuffix(m.UserID, ":"+r.ServerName) {
			candidates = append(candidates, m.UserID)
		}
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	st, err := r.roomState(ctx, tx, b, roomID)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(candidates, func(u string) bool {
		return slices.ContainsFunc(st.Joined, func(m storage.Member) bool { return m.UserID == u })
	}), nil
}

// stateOf picks the memberships and the power levels out of state events.
func stateOf(state []gomatrixserverlib.PDU) (members []storage.Member, powerLevels json.RawMessage) {
	for _, e := range state {
		if e == nil || e.StateKey() == nil {
			continue
		}
		switch e.Type() {
		case "m.room.member":
			var c struct {
				Membership  string `json:"membership"`
				DisplayName string `json:"displayname"`
			}
			if json.Unmarshal(e.Content(), &c) != nil {
				continue
			}
			members = append(members, storage.Member{UserID: *e.StateKey(), Membership: c.Membership, DisplayName: c.DisplayName})
		case "m.room.power_levels":
			if *e.StateKey() == "" {
				powerLevels = e.Content()
			}
		}
	}
	return members, powerLevels
}

// evaluate runs the push rules of every local joined member but the sender and those who
// ignore the sender against ev, with the room's state before ev, and returns the
// notifications.
func (r *Reader) evaluate(ctx context.Context, tx *sql.Tx, b *batchState, ev gomatrixserverlib.PDU, pos int64) ([]storage.Notification, error) {
	roomID := ev.RoomID().String()
	st, err := r.roomState(ctx, tx, b, roomID)
	if err != nil {
		return nil, err
	}
	sender := string(ev.SenderID())
	var local []storage.Member
	for _, m := range st.Joined {
		if m.UserID != sender && strings.HasSuffix(m.UserID, ":"+r.ServerName) {
			local = append(local, m)
		}
	}
	if invitee := r.invitee(ev, st.Joined); invitee != "" {
		local = append(local, storage.Member{UserID: invitee})
	}
	if len(local) == 0 {
		return nil, nil
	}
	ids := make([]string, len(local))
	for i, m := range local {
		ids[i] = m.UserID
	}
	// Members who ignore the sender are not notified of the sender's events.
	ignoring, err := r.DB.IgnoredBy(ctx, tx, sender, ids)
	if err != nil {
		return nil, eventlog.Retry(err)
	}
	if len(ignoring) > 0 {
		local = slices.DeleteFunc(local, func(m storage.Member) bool { return ignoring[m.UserID] })
		ids = slices.DeleteFunc(ids, func(id string) bool { return ignoring[id] })
	}
	stored, err := r.pushRules(ctx, tx, b, ids)
	if err != nil {
		return nil, err
	}
	var event map[string]any
	if err := json.Unmarshal(ev.JSON(), &event); err != nil {
		return nil, fmt.Errorf("decode event %s: %w", ev.EventID(), err)
	}
	event["event_id"] = ev.EventID()
	levels := parsePowerLevels(st.PowerLevels)
	pctx := pushrules.Context{MemberCount: len(st.Joined), SenderPowerLevel: levels.of(sender), NotificationPowerLevels: levels.notifications}
	threadID := ThreadOf(ev.Content())
	var out []storage.Notification
	for _, m := range local {
		rs := r.Rules.Get(m.UserID, stored[m.UserID], r.Logger)
		pctx.UserID, pctx.DisplayName = m.UserID, m.DisplayName
		r.Metrics.evaluated()
		rule := r.Evaluator.Match(rs, event, &pctx)
		if rule == nil {
			continue
		}
		outcome := pushrules.Actions(rule.Actions)
		if !outcome.Notify {
			continue
		}
		actions, err := json.Marshal(rule.Actions)
		if err != nil {
			return nil, err
		}
		out = append(out, storage.Notification{UserID: m.UserID, RoomID: roomID, EventID: ev.EventID(), ThreadID: threadID,
			Actions: actions, Highlight: outcome.Highlight, Pos: pos})
	}
	return out, nil
}

// invitee is the local user ev invites, when that user is not joined already (and not
// the sender): the invite is evaluated for them too (.m.rule.invite_for_me).
func (r *Reader) invitee(ev gomatrixserverlib.PDU, joined []storage.Member) string {
	if ev.Type() != "m.room.member" || ev.StateKey() == nil || *ev.StateKey() == string(ev.SenderID()) ||
		!strings.HasSuffix(*ev.StateKey(), ":"+r.ServerName) {
		return ""
	}
	var c struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.Membership != "invite" {
		return ""
	}
	for _, m := range joined {
		if m.UserID == *ev.StateKey() {
			return ""
		}
	}
	return *ev.StateKey()
}

// ThreadOf is the thread an event with content belongs to: the root's event ID for an
// m.thread relation, api.MainThread otherwise.
func ThreadOf(content []byte) string {
	var c struct {
		RelatesTo struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) == nil && c.RelatesTo.RelType == "m.thread" && c.RelatesTo.EventID != "" {
		return c.RelatesTo.EventID
	}
	return api.MainThread
}
