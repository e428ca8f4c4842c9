package internal

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// maxInlineStateEvents bounds how many added state events an output carries inline;
// beyond it readers fetch them by ID (a remote join adds the whole room state at once).
const maxInlineStateEvents = 50

// applyRemote applies one message holding events from other servers in one transaction
// that also stores the partition's next offset. Each event is decided on its own (Atomic
// does not apply): see api.KindOutlier and api.KindFederated.
func (in *Inputer) applyRemote(ctx context.Context, partition int32, rec eventlog.Record, msg *api.InputRoomEvents) error {
	start := time.Now()
	head, err := in.cache.head(ctx, msg.RoomID)
	if err != nil {
		return err
	}
	version := msg.RoomVersion
	if head != nil {
		version = head.room.RoomVersion
	}
	results := make([]api.Result, len(msg.Events))
	msg, kept := withoutUnstorable(msg, results)
	if err = in.assignRemoteNIDs(ctx, msg); err != nil {
		return err
	}
	verImpl, verr := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	var rt *remoteTx
	err = in.db.Write(ctx, func(w storage.Writer) error {
		if verr != nil {
			copy(results, failAll(len(results), matrixerr.UnsupportedRoomVersion("unknown room or room version")))
			return w.SaveOffset(in.InputTopic, partition, rec.Offset+1)
		}
		rt = newRemoteTx(in, w, msg.RoomID, verImpl, head)
		if err := rt.prefetch(ctx, msg); err != nil {
			return err
		}
		for i := range msg.Events {
			res, err := rt.apply(ctx, &msg.Events[i])
			if err != nil {
				return err
			}
			results[kept[i]] = res
		}
		if err := rt.outputBackfilled(); err != nil {
			return err
		}
		if rt.headChanged {
			if err := w.UpdateRoom(&rt.h.room); err != nil {
				return fmt.Errorf("update room %s: %w", msg.RoomID, err)
			}
		}
		return w.SaveOffset(in.InputTopic, partition, rec.Offset+1)
	})
	if err != nil {
		return err
	}
	accepted := 0
	if rt != nil {
		for _, c := range rt.inserted {
			in.cache.putEvent(c.nid, c.pdu)
		}
		in.cache.dropEvents(rt.redacted)
		if rt.headChanged {
			in.cache.setHead(rt.h)
		}
		if err = in.flush(ctx, rt.outbound); err != nil {
			return err
		}
		accepted = len(rt.inserted)
	}
	in.results.publish(partition, []int64{rec.Offset}, []string{msg.MessageID}, [][]api.Result{results}, rec.Offset+1)
	in.Metrics.observeBatch(1, accepted, time.Since(start))
	return nil
}

// withoutUnstorable rejects, in results, the events of msg whose type, sender, state key or
// auth-relevant state keys hold NUL or are not UTF-8: PostgreSQL refuses such text even in a
// lookup, so one of them would fail its whole batch for ever on that engine (SQLite would
// store it). It returns msg without them and, for each event it kept, its index in msg.
func withoutUnstorable(msg *api.InputRoomEvents, results []api.Result) (*api.InputRoomEvents, []int) {
	kept := make([]int, 0, len(msg.Events))
	clean := *msg
	clean.Events = make([]api.InputRoomEvent, 0, len(msg.Events))
	for i, ie := range msg.Events {
		if ie.Event != nil && ie.Event.PDU != nil && !storableIdentifiers(ie.Event.PDU) {
			results[i] = api.Result{EventID: ie.Event.PDU.EventID(), Err: matrixerr.BadJSON("event type, sender and state keys must be UTF-8 without NUL")}
			continue
		}
		kept = append(kept, i)
		clean.Events = append(clean.Events, ie)
	}
	return &clean, kept
}

func storableIdentifiers(ev gomatrixserverlib.PDU) bool {
	texts := []string{ev.Type(), string(ev.SenderID())}
	if sk := ev.StateKey(); sk != nil {
		texts = append(texts, *sk)
	}
	for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples() {
		texts = append(texts, t.EventType, t.StateKey)
	}
	for _, s := range texts {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return false
		}
	}
	return true
}

// assignRemoteNIDs gives a NID to every type and state key the message's events hold or
// need for their auth checks, before the write transaction (which cannot assign them).
func (in *Inputer) assignRemoteNIDs(ctx context.Context, msg *api.InputRoomEvents) error {
	typeNames := []string{spec.MRoomCreate, spec.MRoomPowerLevels, spec.MRoomJoinRules, spec.MRoomMember, spec.MRoomHistoryVisibility, spec.MRoomThirdPartyInvite}
	keys := []string{""}
	for _, ie := range msg.Events {
		if ie.Event == nil || ie.Event.PDU == nil {
			continue
		}
		ev := ie.Event.PDU
		typeNames = append(typeNames, ev.Type())
		keys = append(keys, string(ev.SenderID()))
		if sk := ev.StateKey(); sk != nil {
			keys = append(keys, *sk)
		}
		needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
		for _, t := range needed.Tuples() {
			typeNames = append(typeNames, t.EventType)
			keys = append(keys, t.StateKey)
		}
	}
	if _, err := in.cache.typeNIDs(ctx, typeNames...); err != nil {
		return fmt.Errorf("assign type NIDs: %w", err)
	}
	if _, err := in.cache.keyNIDs(ctx, keys...); err != nil {
		return fmt.Errorf("assign state key NIDs: %w", err)
	}
	return nil
}

// knownEvent is a stored event of the room with its parsed form.
type knownEvent struct {
	row storage.Event
	pdu gomatrixserverlib.PDU
}

// stateRef is a room state and the snapshot that stores it (0 while it is not stored).
type stateRef struct {
	nid types.SnapshotNID
	st  *types.State
}

// remoteTx applies the events of one message inside its write transaction. It remembers
// what it stored, since the transaction's writes are not visible to the database reads
// (which go through the cache and the pool).
type remoteTx struct {
	in      *Inputer
	w       storage.Writer
	roomID  string
	version gomatrixserverlib.IRoomVersion
	// h is a mutable copy of the room's head (room NID 0 until the room is stored).
	h           *roomHead
	headChanged bool
	known       map[string]*knownEvent
	// absent holds event IDs looked up and not stored before the transaction (those it
	// stores are in known, which is consulted first).
	absent   map[string]bool
	byNID    map[types.EventNID]*knownEvent
	snaps    map[types.SnapshotNID]*types.State
	inserted []cachedEvent
	redacted []types.EventNID
	// redactedJSON is the redacted form of each event redacted in this transaction, by ID.
	redactedJSON map[string][]byte
	// redactions is whether the room has stored redactions: unknown (nil) until asked,
	// then true once one is stored in this transaction.
	redactions *bool
	outbound   []storage.Outbound
	// backfilled are the outputs of the message's backfilled events, oldest first; they
	// are stored newest first once the message is applied (api.KindBackfilled).
	backfilled []api.OutputBackfilledEvent
}

func newRemoteTx(in *Inputer, w storage.Writer, roomID string, version gomatrixserverlib.IRoomVersion, head *roomHead) *remoteTx {
	rt := &remoteTx{
		in: in, w: w, roomID: roomID, version: version,
		known: map[string]*knownEvent{}, absent: map[string]bool{}, byNID: map[types.EventNID]*knownEvent{}, snaps: map[types.SnapshotNID]*types.State{},
		redactedJSON: map[string][]byte{},
	}
	if head == nil {
		rt.h = &roomHead{room: storage.Room{RoomID: roomID, RoomVersion: string(version.Version())}, state: &types.State{}}
	} else {
		h := *head
		h.room.Latest = append([]types.EventNID(nil), head.room.Latest...)
		h.latestIDs = append([]string(nil), head.latestIDs...)
		rt.h = &h
	}
	return rt
}

func reject(err *matrixerr.Error) (api.Result, error) {
	return api.Result{Err: err}, nil
}

// apply decides and stores one event. Rejections come back in the Result; an error is an
// internal failure that makes the message retry.
func (rt *remoteTx) apply(ctx context.Context, ie *api.InputRoomEvent) (api.Result, error) {
	if ie.Kind != api.KindOutlier && ie.Kind != api.KindFederated && ie.Kind != api.KindRemoteMembership && ie.Kind != api.KindBackfilled && ie.Kind != api.KindRemoteJoin {
		return reject(matrixerr.BadJSON(fmt.Sprintf("kind %q cannot be mixed with events from other servers", ie.Kind)))
	}
	if ie.Event == nil || ie.Event.PDU == nil {
		return reject(matrixerr.BadJSON("an event from another server must be complete"))
	}
	ev := ie.Event.PDU
	if ev.RoomID().String() != rt.roomID {
		return reject(matrixerr.BadJSON("event is for another room"))
	}
	if ev.Version() != rt.version.Version() {
		return reject(matrixerr.BadJSON("event is of another room version than the room"))
	}
	existing, err := rt.event(ctx, ev.EventID())
	if err != nil {
		return api.Result{}, err
	}
	if existing != nil {
		if existing.row.RoomNID != rt.h.room.NID {
			return reject(matrixerr.BadJSON("event ID is taken by another room"))
		}
		if existing.row.Rejected {
			return reject(matrixerr.Forbidden("the event was rejected"))
		}
		if !existing.row.Outlier || (ie.Kind != api.KindFederated && ie.Kind != api.KindBackfilled && ie.Kind != api.KindRemoteJoin) {
			return api.Result{EventID: ev.EventID(), SoftFailed: existing.row.SoftFailed}, nil
		}
	}
	if ev, err = rt.redactedByEarlier(ctx, ev); err != nil {
		return api.Result{}, err
	}
	if ie.Kind == api.KindRemoteMembership {
		inRoom, err := rt.placeable(ctx, ev)
		if err != nil {
			return api.Result{}, err
		}
		if !inRoom {
			return rt.remoteMembership(ctx, ev)
		}
		federated := *ie
		federated.Kind = api.KindFederated
		ie = &federated
	}
	// A room stored only for a remote invite (no timeline) gets its create event with the
	// join that follows.
	if ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("") && existing == nil && len(rt.h.room.Latest) > 0 {
		return reject(matrixerr.RoomInUse("the room already has a create event"))
	}
	auth, merr, err := rt.authEvents(ctx, ev)
	if err != nil {
		return api.Result{}, err
	}
	// The auth rules judge the event as it was sent: the redacted form of a redaction that
	// an earlier one redacts has lost its target in room versions 1 and 2, whose rules check it.
	if merr == nil {
		if err = allowed(ie.Event.PDU, auth); err != nil {
			merr = matrixerr.Forbidden("event fails auth against its auth_events: " + err.Error())
		}
	}
	if merr == nil {
		if merr, err = rt.redactsAnotherRoom(ctx, ie.Event.PDU); err != nil {
			return api.Result{}, err
		}
	}
	if merr != nil {
		if merr.Status == http.StatusForbidden {
			return rt.rejectAndKeep(ctx, ie, existing, merr)
		}
		return api.Result{Err: merr}, nil
	}
	if ie.Kind == api.KindOutlier {
		if _, err = rt.insert(ctx, ev, storage.Event{Outlier: true}); err != nil {
			return api.Result{}, err
		}
		return api.Result{EventID: ev.EventID()}, nil
	}
	if ie.Kind == api.KindBackfilled {
		return rt.backfill(ctx, ie, ev, existing)
	}
	return rt.place(ctx, ie, ev, existing)
}

// redactsAnotherRoom refuses a redaction whose target is a stored event of another room:
// it could never apply, and readers must not be shown it (Synapse and Dendrite refuse it
// too; sytest "An event which redacts an event in a different room should be ignored").
func (rt *remoteTx) redactsAnotherRoom(ctx context.Context, ev gomatrixserverlib.PDU) (*matrixerr.Error, error) {
	if ev.Type() != spec.MRoomRedaction || ev.Redacts() == "" {
		return nil, nil
	}
	target, err := rt.event(ctx, ev.Redacts())
	if err != nil || target == nil || target.row.RoomNID == rt.h.room.NID {
		return nil, err
	}
	return matrixerr.Forbidden("the redacted event is in another room"), nil
}

// rejectAndKeep answers an event from another server that the auth rules refused (merr)
// and stores it as rejected (storage.Event.Rejected), so that later events naming it as a
// prev event can be placed (spec "Rejection"): an outlier as a rejected outlier, a
// federated or backfilled event with the state before it when that state is known (when
// it is not, nothing is stored).
func (rt *remoteTx) rejectAndKeep(ctx context.Context, ie *api.InputRoomEvent, existing *knownEvent, merr *matrixerr.Error) (api.Result, error) {
	ev := ie.Event.PDU
	if ie.Kind == api.KindOutlier {
		if existing == nil {
			if _, err := rt.insert(ctx, ev, storage.Event{Outlier: true, Rejected: true}); err != nil {
				return api.Result{}, err
			}
		}
		return reject(merr)
	}
	if ie.Kind != api.KindFederated && ie.Kind != api.KindBackfilled && ie.Kind != api.KindRemoteJoin {
		return reject(merr)
	}
	before, serr, err := rt.stateBefore(ctx, ev, ie)
	if err != nil || serr != nil {
		return api.Result{Err: merr}, err
	}
	if before.nid, err = rt.storeState(before); err != nil {
		return api.Result{}, err
	}
	if existing != nil {
		if err = rt.w.RejectEvent(existing.row.NID, before.nid); err != nil {
			return api.Result{}, fmt.Errorf("reject outlier %s: %w", ev.EventID(), err)
		}
		existing.row.Outlier, existing.row.Rejected, existing.row.Before = false, true, before.nid
	} else if _, err = rt.insert(ctx, ev, storage.Event{Before: before.nid, Rejected: true}); err != nil {
		return api.Result{}, err
	}
	return reject(merr)
}

// backfill places an event older than the room's timeline (api.KindBackfilled): checked
// against the state before it like a federated event, stored with that state so that
// later backfilled events build on it, but the room's current state, extremities and
// depth stay as they are and it is never soft-failed.
func (rt *remoteTx) backfill(ctx context.Context, ie *api.InputRoomEvent, ev gomatrixserverlib.PDU, existing *knownEvent) (api.Result, error) {
	if len(rt.h.room.Latest) == 0 {
		return reject(matrixerr.NotFound("the room has no timeline to backfill"))
	}
	before, merr, err := rt.stateBefore(ctx, ev, ie)
	if err != nil || merr != nil {
		return api.Result{Err: merr}, err
	}
	auth, err := rt.authFromState(ctx, before.st, ev)
	if err != nil {
		return api.Result{}, err
	}
	if err = allowed(ie.Event.PDU, auth); err != nil {
		return rt.rejectAndKeep(ctx, ie, existing, matrixerr.Forbidden("event fails auth against the state before it: "+err.Error()))
	}
	if before.nid, err = rt.storeState(before); err != nil {
		return api.Result{}, err
	}
	if existing != nil {
		if err = rt.w.PlaceEvent(existing.row.NID, before.nid, false); err != nil {
			return api.Result{}, fmt.Errorf("place outlier %s: %w", ev.EventID(), err)
		}
		existing.row.Outlier, existing.row.Before = false, before.nid
	} else if _, err = rt.insert(ctx, ev, storage.Event{Before: before.nid}); err != nil {
		return api.Result{}, err
	}
	out := api.OutputBackfilledEvent{Event: api.Event{PDU: ev}}
	if out.HistoryVisibility, err = rt.historyVisibility(ctx, before.st); err != nil {
		return api.Result{}, err
	}
	if ev.Type() == spec.MRoomRedaction && ev.Redacts() != "" {
		if out.RedactsEventID, err = rt.redact(ctx, ev, before.st); err != nil {
			return api.Result{}, err
		}
	}
	rt.backfilled = append(rt.backfilled, out)
	return api.Result{EventID: ev.EventID()}, nil
}

// outputBackfilled stores the outputs of the message's backfilled events, newest first
// (see api.OutputBackfilledEvent). An event that a newer one of the message redacted goes
// out redacted: readers store the redaction first.
func (rt *remoteTx) outputBackfilled() error {
	for i := len(rt.backfilled) - 1; i >= 0; i-- {
		if redacted, ok := rt.redactedJSON[rt.backfilled[i].Event.EventID()]; ok {
			pdu, err := api.ParseTrusted(rt.h.room.RoomVersion, rt.backfilled[i].Event.EventID(), redacted, true)
			if err != nil {
				return err
			}
			rt.backfilled[i].Event = api.Event{PDU: pdu}
		}
		if err := rt.output(api.OutputRoomEvent{Type: api.OutputTypeBackfilledEvent, BackfilledEvent: &rt.backfilled[i]}); err != nil {
			return err
		}
	}
	return nil
}

// placeable reports whether a membership event settled with another server can go in the
// timeline of a room this server is in, as the room's server will send it later: its
// prev_events and auth_events are here (placed), and it passes auth against its auth events
// and the room's current state. Placed, it is in the room's state before the user is shown
// it: an invite received with /invite that the user accepts at once is then joined here
// (kept as an outlier until its /send, the local join was checked against state without it
// and refused).
func (rt *remoteTx) placeable(ctx context.Context, ev gomatrixserverlib.PDU) (bool, error) {
	prevs := ev.PrevEventIDs()
	if len(rt.h.room.Latest) == 0 || len(prevs) == 0 {
		return false, nil
	}
	known, err := rt.events(ctx, prevs)
	if err != nil {
		return false, err
	}
	for _, id := range prevs {
		if k := known[id]; k == nil || k.row.RoomNID != rt.h.room.NID || k.row.Outlier {
			return false, nil
		}
	}
	auth, merr, err := rt.authEvents(ctx, ev)
	if err != nil || merr != nil || allowed(ev, auth) != nil {
		return false, err
	}
	cur, err := rt.authFromState(ctx, rt.h.state, ev)
	if err != nil {
		return false, err
	}
	return allowed(ev, cur) == nil, nil
}

// remoteMembership stores a membership event settled with another server as an outlier
// and tells readers about it (api.KindRemoteMembership).
func (rt *remoteTx) remoteMembership(ctx context.Context, ev gomatrixserverlib.PDU) (api.Result, error) {
	m, err := ev.Membership()
	if err != nil || ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return reject(matrixerr.BadJSON("not a membership event"))
	}
	if _, err = rt.insert(ctx, ev, storage.Event{Outlier: true}); err != nil {
		return api.Result{}, err
	}
	// The user's membership as queries report it; the room's state stays as it was.
	if err = rt.w.SetMembership(rt.h.room.NID, storage.Membership{UserID: *ev.StateKey(), Membership: m, EventID: ev.EventID()}); err != nil {
		return api.Result{}, fmt.Errorf("store membership: %w", err)
	}
	out := api.OutputNewRoomEvent{
		Event: api.Event{PDU: ev}, AddsStateEventIDs: []string{ev.EventID()}, AddsStateEvents: []api.Event{{PDU: ev}},
		HistoryVisibility: string(gomatrixserverlib.HistoryVisibilityShared),
	}
	if err = rt.output(api.OutputRoomEvent{Type: api.OutputTypeNewRoomEvent, NewRoomEvent: &out}); err != nil {
		return api.Result{}, err
	}
	return api.Result{EventID: ev.EventID()}, nil
}

// place puts a federated event in the timeline: auth against the state before it
// (rejection), then against the current state (soft failure), then the new extremities
// and current state.
func (rt *remoteTx) place(ctx context.Context, ie *api.InputRoomEvent, ev gomatrixserverlib.PDU, existing *knownEvent) (api.Result, error) {
	before, merr, err := rt.stateBefore(ctx, ev, ie)
	if err != nil || merr != nil {
		return api.Result{Err: merr}, err
	}
	auth, err := rt.authFromState(ctx, before.st, ev)
	if err != nil {
		return api.Result{}, err
	}
	if err = allowed(ie.Event.PDU, auth); err != nil {
		return rt.rejectAndKeep(ctx, ie, existing, matrixerr.Forbidden("event fails auth against the state before it: "+err.Error()))
	}
	stale := false
	if ie.Kind == api.KindRemoteJoin {
		if stale, err = rt.staleCopy(ctx); err != nil {
			return api.Result{}, err
		}
	}
	softFailed := false
	if len(rt.h.room.Latest) > 0 && !stale {
		cur, err := rt.authFromState(ctx, rt.h.state, ev)
		if err != nil {
			return api.Result{}, err
		}
		softFailed = allowed(ie.Event.PDU, cur) != nil
	}
	if before.nid, err = rt.storeState(before); err != nil {
		return api.Result{}, err
	}
	var k *knownEvent
	if existing != nil {
		if err = rt.w.PlaceEvent(existing.row.NID, before.nid, softFailed); err != nil {
			return api.Result{}, fmt.Errorf("place outlier %s: %w", ev.EventID(), err)
		}
		existing.row.Outlier, existing.row.Before, existing.row.SoftFailed = false, before.nid, softFailed
		k = existing
	} else if k, err = rt.insert(ctx, ev, storage.Event{Before: before.nid, SoftFailed: softFailed}); err != nil {
		return api.Result{}, err
	}
	if softFailed {
		return api.Result{EventID: ev.EventID(), SoftFailed: true}, nil
	}
	if stale {
		err = rt.replaceStale(ctx, k, before)
	} else {
		err = rt.advance(ctx, k, before)
	}
	if err != nil {
		return api.Result{}, err
	}
	return api.Result{EventID: ev.EventID()}, nil
}

// staleCopy reports whether no local user is joined in the room's current state here: this
// server then received none of the room's events since its last member left (or never had
// the room), so its copy cannot be trusted over the state a join through another server
// brings (api.KindRemoteJoin).
func (rt *remoteTx) staleCopy(ctx context.Context) (bool, error) {
	if rt.h.room.NID == 0 || len(rt.h.room.Latest) == 0 {
		return true, nil
	}
	users, err := rt.in.db.UsersOfServer(ctx, rt.h.room.NID, string(rt.in.serverName))
	if err != nil {
		return false, fmt.Errorf("load local users of %s: %w", rt.roomID, err)
	}
	tuples := make([]gomatrixserverlib.StateKeyTuple, len(users))
	for i, u := range users {
		tuples[i] = gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: u}
	}
	members, err := rt.lookup(ctx, rt.h.state, tuples)
	if err != nil {
		return false, err
	}
	for _, m := range members {
		if membership, err := m.Membership(); err == nil && membership == spec.Join {
			return false, nil
		}
	}
	return true, nil
}

// replaceStale makes a local user's join through another server the room's only forward
// extremity and the state after it the current state, in place of a stale copy
// (api.KindRemoteJoin): the copy's extremities are events the other servers built on long
// ago, and resolving the join's state against theirs would bring back what changed since.
func (rt *remoteTx) replaceStale(ctx context.Context, k *knownEvent, before stateRef) error {
	ev := k.pdu
	after, err := rt.stateAfter(ctx, k)
	if err != nil {
		return err
	}
	added, removed := rt.h.state.Diff(after.st)
	out := api.OutputNewRoomEvent{Event: api.Event{PDU: ev}}
	if out.HistoryVisibility, err = rt.historyVisibility(ctx, before.st); err != nil {
		return err
	}
	snap, err := rt.storeState(after)
	if err != nil {
		return err
	}
	rt.h.state, rt.h.room.Snapshot = after.st, snap
	if err = rt.applyDelta(ctx, &out, added, removed); err != nil {
		return err
	}
	rt.h.room.Latest, rt.h.latestIDs = []types.EventNID{k.row.NID}, []string{ev.EventID()}
	rt.h.room.Depth = max(rt.h.room.Depth, ev.Depth())
	rt.headChanged = true
	return rt.output(api.OutputRoomEvent{Type: api.OutputTypeNewRoomEvent, NewRoomEvent: &out})
}

// event returns a stored event by ID, or nil.
func (rt *remoteTx) event(ctx context.Context, id string) (*knownEvent, error) {
	evs, err := rt.events(ctx, []string{id})
	if err != nil {
		return nil, err
	}
	return evs[id], nil
}

// events returns the stored events among ids, looked up in one query.
func (rt *remoteTx) events(ctx context.Context, ids []string) (map[string]*knownEvent, error) {
	out := make(map[string]*knownEvent, len(ids))
	var missing []string
	for _, id := range ids {
		if k, ok := rt.known[id]; ok {
			out[id] = k
		} else if !rt.absent[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := rt.in.db.EventsByID(ctx, missing)
	if err != nil {
		return nil, err
	}
	for _, id := range missing {
		rt.absent[id] = true
	}
	for _, r := range rows {
		delete(rt.absent, r.EventID)
		k := &knownEvent{row: r}
		if r.RoomNID == rt.h.room.NID {
			if k.pdu, err = api.ParseTrusted(rt.h.room.RoomVersion, r.EventID, r.JSON, r.Redacted); err != nil {
				return nil, err
			}
		}
		rt.remember(k)
		out[r.EventID] = k
	}
	return out, nil
}

// prefetch looks up, in one query, the message's events and the prev and auth events
// they name, so that deciding them one by one costs no query per event for these.
func (rt *remoteTx) prefetch(ctx context.Context, msg *api.InputRoomEvents) error {
	var ids []string
	for _, ie := range msg.Events {
		if ie.Event == nil || ie.Event.PDU == nil {
			continue
		}
		ev := ie.Event.PDU
		ids = append(append(append(ids, ev.EventID()), ev.PrevEventIDs()...), ev.AuthEventIDs()...)
	}
	slices.Sort(ids)
	_, err := rt.events(ctx, slices.Compact(ids))
	return err
}

func (rt *remoteTx) remember(k *knownEvent) {
	rt.known[k.row.EventID] = k
	rt.byNID[k.row.NID] = k
}

// pdus returns events of the room by NID, in order.
func (rt *remoteTx) pdus(ctx context.Context, nids []types.EventNID) ([]gomatrixserverlib.PDU, error) {
	out := make([]gomatrixserverlib.PDU, len(nids))
	var missing []types.EventNID
	for i, n := range nids {
		if k, ok := rt.byNID[n]; ok && k.pdu != nil {
			out[i] = k.pdu
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	loaded, err := rt.in.cache.eventsByNID(ctx, rt.h.room.RoomVersion, missing)
	if err != nil {
		return nil, err
	}
	j := 0
	for i := range out {
		if out[i] == nil {
			out[i] = loaded[j]
			j++
		}
	}
	return out, nil
}

// authEvents loads the event's auth_events, all of which must be known events of the room.
func (rt *remoteTx) authEvents(ctx context.Context, ev gomatrixserverlib.PDU) (*gomatrixserverlib.AuthEvents, *matrixerr.Error, error) {
	ids := ev.AuthEventIDs()
	known, err := rt.events(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	pdus := make([]gomatrixserverlib.PDU, 0, len(ids))
	for _, id := range ids {
		k := known[id]
		if k == nil {
			return nil, matrixerr.NotFound(fmt.Sprintf("auth event %s is unknown", id)), nil
		}
		if k.row.RoomNID != rt.h.room.NID {
			// An auth event of another room: rejected (auth rules, "auth_events ... room_id").
			return nil, matrixerr.Forbidden(fmt.Sprintf("auth event %s is of another room", id)), nil
		}
		if k.row.Rejected {
			return nil, matrixerr.Forbidden(fmt.Sprintf("auth event %s was rejected", id)), nil
		}
		pdus = append(pdus, k.pdu)
	}
	if err = checkAuthEventsSelection(pdus); err != nil {
		return nil, matrixerr.Forbidden("bad auth events: " + err.Error()), nil
	}
	auth, err := gomatrixserverlib.NewAuthEvents(pdus)
	if err != nil {
		return nil, matrixerr.Forbidden("bad auth events: " + err.Error()), nil
	}
	return auth, nil, nil
}

// authFromState picks from st the events the auth rules need for ev.
func (rt *remoteTx) authFromState(ctx context.Context, st *types.State, ev gomatrixserverlib.PDU) (*gomatrixserverlib.AuthEvents, error) {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
	needed = specStateNeeded(needed, ev.Version(), ev.Type(), ev.SenderID())
	pdus, err := rt.lookup(ctx, st, needed.Tuples())
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}

// lookup returns the events st holds for tuples (absent ones left out).
func (rt *remoteTx) lookup(ctx context.Context, st *types.State, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	nts, err := rt.in.cache.knownTuples(ctx, tuples)
	if err != nil {
		return nil, err
	}
	var nids []types.EventNID
	for _, t := range nts {
		if nid := st.Lookup(t); nid != 0 {
			nids = append(nids, nid)
		}
	}
	return rt.pdus(ctx, nids)
}

// givenState is a state a writer gave as event IDs, all of which must be known state
// events of the room that were not rejected.
func (rt *remoteTx) givenState(ctx context.Context, stateIDs []string) (stateRef, *matrixerr.Error, error) {
	known, err := rt.events(ctx, stateIDs)
	if err != nil {
		return stateRef{}, nil, err
	}
	entries := make([]types.StateEntry, 0, len(stateIDs))
	for _, id := range stateIDs {
		k := known[id]
		if k == nil || k.row.RoomNID != rt.h.room.NID || !k.row.IsState || k.row.Rejected {
			return stateRef{}, matrixerr.NotFound(fmt.Sprintf("state event %s is unknown", id)), nil
		}
		entries = append(entries, types.StateEntry{StateTuple: types.StateTuple{Type: k.row.Type, Key: k.row.StateKey}, Event: k.row.NID})
	}
	return stateRef{st: types.NewState(entries)}, nil, nil
}

// stateBefore is the state before ie's event: ie.StateEventIDs when given, else the
// resolution of the states after its prev_events. The state after a placed prev event is
// the roomserver's own; for one it has not placed, the writer gives the state before it in
// ie.PrevStates, and the prev event itself must be stored, as an outlier at least (it is
// added when it is a state event that was not rejected).
func (rt *remoteTx) stateBefore(ctx context.Context, ev gomatrixserverlib.PDU, ie *api.InputRoomEvent) (stateRef, *matrixerr.Error, error) {
	if len(ie.StateEventIDs) > 0 {
		return rt.givenState(ctx, ie.StateEventIDs)
	}
	prevs := ev.PrevEventIDs()
	if len(prevs) == 0 {
		if ev.Type() == spec.MRoomCreate {
			return stateRef{st: &types.State{}}, nil, nil
		}
		return stateRef{}, matrixerr.BadJSON("event has no prev_events"), nil
	}
	known, err := rt.events(ctx, prevs)
	if err != nil {
		return stateRef{}, nil, err
	}
	var states []stateRef
	seen := map[types.SnapshotNID]bool{}
	for _, id := range prevs {
		k := known[id]
		if k != nil && k.row.RoomNID != rt.h.room.NID {
			k = nil // another room's event is no prev event of this one
		}
		var s stateRef
		switch given, ok := ie.PrevStates[id]; {
		case k != nil && !k.row.Outlier:
			if s, err = rt.stateAfter(ctx, k); err != nil {
				return stateRef{}, nil, err
			}
		case k != nil && ok:
			g, merr, err := rt.givenState(ctx, given)
			if err != nil || merr != nil {
				return stateRef{}, merr, err
			}
			s = g
			if k.row.IsState && !k.row.Rejected {
				s = stateRef{st: g.st.With(types.StateTuple{Type: k.row.Type, Key: k.row.StateKey}, k.row.NID)}
			}
		default:
			return stateRef{}, matrixerr.NotFound(fmt.Sprintf("prev event %s is unknown and no state was given", id)), nil
		}
		if s.nid != 0 {
			if seen[s.nid] {
				continue
			}
			seen[s.nid] = true
		}
		states = append(states, s)
	}
	if len(states) == 1 {
		return states[0], nil, nil
	}
	s, err := rt.resolve(ctx, states)
	return s, nil, err
}

// loadState returns a stored snapshot.
func (rt *remoteTx) loadState(ctx context.Context, nid types.SnapshotNID) (*types.State, error) {
	if st, ok := rt.snaps[nid]; ok {
		return st, nil
	}
	if nid != 0 && nid == rt.h.room.Snapshot {
		return rt.h.state, nil // the current state, in memory: the usual case in a linear room
	}
	return rt.in.cache.loadState(ctx, nid)
}

// stateAfter is the state after a timeline event.
func (rt *remoteTx) stateAfter(ctx context.Context, k *knownEvent) (stateRef, error) {
	st, err := rt.loadState(ctx, k.row.Before)
	if err != nil {
		return stateRef{}, err
	}
	if !k.row.IsState || k.row.Rejected {
		return stateRef{nid: k.row.Before, st: st}, nil
	}
	return stateRef{st: st.With(types.StateTuple{Type: k.row.Type, Key: k.row.StateKey}, k.row.NID)}, nil
}

// storeState stores a state's new blocks and its snapshot, unless it is stored already.
func (rt *remoteTx) storeState(s stateRef) (types.SnapshotNID, error) {
	if s.nid != 0 {
		return s.nid, nil
	}
	if err := rt.ensureRoom(); err != nil {
		return 0, err
	}
	var blockNIDs [types.Buckets]types.BlockNID
	for i, b := range s.st.Blocks {
		if b == nil {
			continue
		}
		if b.NID == 0 {
			bn, err := rt.w.InsertBlock(b.Entries)
			if err != nil {
				return 0, fmt.Errorf("store state block: %w", err)
			}
			b.NID = bn
		}
		blockNIDs[i] = b.NID
	}
	nid, err := rt.w.InsertSnapshot(rt.h.room.NID, blockNIDs)
	if err != nil {
		return 0, fmt.Errorf("store state snapshot: %w", err)
	}
	rt.snaps[nid] = s.st
	return nid, nil
}

func (rt *remoteTx) ensureRoom() error {
	if rt.h.room.NID != 0 {
		return nil
	}
	nid, err := rt.w.InsertRoom(rt.h.room.RoomID, rt.h.room.RoomVersion)
	if err != nil {
		return fmt.Errorf("store room %s: %w", rt.roomID, err)
	}
	rt.h.room.NID = nid
	rt.headChanged = true
	return nil
}

// insert stores an event; how it is placed (Before, Outlier, SoftFailed, Rejected) comes
// from place, the rest from ev.
func (rt *remoteTx) insert(ctx context.Context, ev gomatrixserverlib.PDU, place storage.Event) (*knownEvent, error) {
	if err := rt.ensureRoom(); err != nil {
		return nil, err
	}
	tn, err := rt.in.cache.typeNIDs(ctx, ev.Type())
	if err != nil {
		return nil, err
	}
	row := storage.Event{
		RoomNID: rt.h.room.NID, EventID: ev.EventID(), Type: tn[ev.Type()], Depth: ev.Depth(), Before: place.Before,
		Redacted: ev.Redacted(), Outlier: place.Outlier, SoftFailed: place.SoftFailed, Rejected: place.Rejected, Redacts: redactsOf(ev), JSON: ev.JSON(),
	}
	if sk := ev.StateKey(); sk != nil {
		kn, err := rt.in.cache.keyNIDs(ctx, *sk)
		if err != nil {
			return nil, err
		}
		row.IsState, row.StateKey = true, kn[*sk]
	}
	if row.NID, err = rt.w.InsertEvent(&row); err != nil {
		return nil, fmt.Errorf("store event %s: %w", ev.EventID(), err)
	}
	if row.Redacts != "" {
		has := true
		rt.redactions = &has
	}
	k := &knownEvent{row: row, pdu: ev}
	rt.remember(k)
	rt.inserted = append(rt.inserted, cachedEvent{row.NID, ev})
	return k, nil
}

// resolve runs the room version's state resolution over several states. Only the
// conflicted events and the unconflicted events their auth checks need go to
// gomatrixserverlib (with their auth chains); every other unconflicted entry is kept as is,
// so resolving forks of a room with 100,000 members does not load them all.
func (rt *remoteTx) resolve(ctx context.Context, states []stateRef) (stateRef, error) {
	union := map[types.StateTuple][]types.EventNID{}
	for _, s := range states {
		for _, e := range s.st.Entries() {
			if !containsNID(union[e.StateTuple], e.Event) {
				union[e.StateTuple] = append(union[e.StateTuple], e.Event)
			}
		}
	}
	var conflictedNIDs []types.EventNID
	for _, nids := range union {
		if len(nids) > 1 {
			conflictedNIDs = append(conflictedNIDs, nids...)
		}
	}
	entries := make([]types.StateEntry, 0, len(union))
	for t, nids := range union {
		if len(nids) == 1 {
			entries = append(entries, types.StateEntry{StateTuple: t, Event: nids[0]})
		}
	}
	if len(conflictedNIDs) == 0 {
		return stateRef{st: types.NewState(entries)}, nil
	}
	conflicted, err := rt.pdus(ctx, conflictedNIDs)
	if err != nil {
		return stateRef{}, err
	}
	needed := gomatrixserverlib.StateNeededForAuth(conflicted)
	nts, err := rt.in.cache.knownTuples(ctx, needed.Tuples())
	if err != nil {
		return stateRef{}, err
	}
	var unconflictedNIDs []types.EventNID
	for _, t := range nts {
		if nids := union[t]; len(nids) == 1 {
			unconflictedNIDs = append(unconflictedNIDs, nids[0])
		}
	}
	unconflicted, err := rt.pdus(ctx, unconflictedNIDs)
	if err != nil {
		return stateRef{}, err
	}
	input := append(append([]gomatrixserverlib.PDU(nil), conflicted...), unconflicted...)
	chain, err := rt.authChain(ctx, input)
	if err != nil {
		return stateRef{}, err
	}
	resolved, err := gomatrixserverlib.ResolveConflicts(rt.version.Version(), input, chain, userIDForSender, func(string) bool { return false })
	if err != nil {
		return stateRef{}, fmt.Errorf("resolve state of %s: %w", rt.roomID, err)
	}
	if len(resolved) == 0 {
		return stateRef{}, fmt.Errorf("resolve state of %s: no create event in the auth chain", rt.roomID)
	}
	for _, ev := range resolved {
		k, err := rt.event(ctx, ev.EventID())
		if err != nil {
			return stateRef{}, err
		}
		if k == nil || !k.row.IsState {
			continue
		}
		t := types.StateTuple{Type: k.row.Type, Key: k.row.StateKey}
		if len(union[t]) > 1 {
			entries = append(entries, types.StateEntry{StateTuple: t, Event: k.row.NID})
		}
	}
	return stateRef{st: types.NewState(entries)}, nil
}

func containsNID(nids []types.EventNID, n types.EventNID) bool {
	for _, x := range nids {
		if x == n {
			return true
		}
	}
	return false
}

// authChain returns every event reachable through auth_events from evs (all stored: an
// event is only stored once its auth events are).
func (rt *remoteTx) authChain(ctx context.Context, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	var out []gomatrixserverlib.PDU
	var next []string
	for _, ev := range evs {
		next = append(next, ev.AuthEventIDs()...)
	}
	for len(next) > 0 {
		var ids []string
		for _, id := range next {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		known, err := rt.events(ctx, ids)
		if err != nil {
			return nil, err
		}
		next = nil
		for _, id := range ids {
			k := known[id]
			if k == nil || k.pdu == nil {
				continue
			}
			out = append(out, k.pdu)
			next = append(next, k.pdu.AuthEventIDs()...)
		}
	}
	return out, nil
}

// advance makes a placed, not soft-failed event a forward extremity in place of its
// prev_events, moves the current state to the resolution of the extremities' states, and
// stores the output.
func (rt *remoteTx) advance(ctx context.Context, k *knownEvent, before stateRef) error {
	ev := k.pdu
	prevs, err := rt.superseded(ctx, ev)
	if err != nil {
		return err
	}
	latestRows, err := rt.latest(ctx)
	if err != nil {
		return err
	}
	after, err := rt.stateAfter(ctx, k)
	if err != nil {
		return err
	}
	states := []stateRef{after}
	latest, latestIDs := []types.EventNID{k.row.NID}, []string{ev.EventID()}
	for _, l := range latestRows {
		if prevs[l.row.EventID] {
			continue
		}
		latest, latestIDs = append(latest, l.row.NID), append(latestIDs, l.row.EventID)
		s, err := rt.stateAfter(ctx, l)
		if err != nil {
			return err
		}
		states = append(states, s)
	}
	next := after
	if len(states) > 1 {
		if next, err = rt.resolve(ctx, states); err != nil {
			return err
		}
	}
	added, removed := rt.h.state.Diff(next.st)
	out := api.OutputNewRoomEvent{Event: api.Event{PDU: ev}}
	if out.HistoryVisibility, err = rt.historyVisibility(ctx, before.st); err != nil {
		return err
	}
	if len(added) > 0 || len(removed) > 0 {
		snap, err := rt.storeState(next)
		if err != nil {
			return err
		}
		rt.h.state, rt.h.room.Snapshot = next.st, snap
		if err = rt.applyDelta(ctx, &out, added, removed); err != nil {
			return err
		}
	}
	rt.h.room.Latest, rt.h.latestIDs = latest, latestIDs
	rt.h.room.Depth = max(rt.h.room.Depth, ev.Depth())
	rt.headChanged = true
	if ev.Type() == spec.MRoomRedaction && ev.Redacts() != "" {
		if out.RedactsEventID, err = rt.redact(ctx, ev, before.st); err != nil {
			return err
		}
	}
	return rt.output(api.OutputRoomEvent{Type: api.OutputTypeNewRoomEvent, NewRoomEvent: &out})
}

// maxRejectedHops bounds how far superseded follows prev events through rejected and
// soft-failed events.
const maxRejectedHops = 10

// superseded are the events a newly placed event supersedes as forward extremities: its
// prev events and, through any of them that were rejected or soft-failed (which never
// became extremities themselves, so their prev events may still be), their prev events in
// turn. Without this, an event after soft-failed ones would leave the event before them an
// extremity for ever (Synapse issue 5269, sytest "Inbound federation correctly handles soft
// failed events as extremities").
func (rt *remoteTx) superseded(ctx context.Context, ev gomatrixserverlib.PDU) (map[string]bool, error) {
	out := map[string]bool{}
	next := ev.PrevEventIDs()
	for hop := 0; len(next) > 0 && hop <= maxRejectedHops; hop++ {
		for _, id := range next {
			out[id] = true
		}
		known, err := rt.events(ctx, next)
		if err != nil {
			return nil, err
		}
		var further []string
		for _, id := range next {
			if k := known[id]; k != nil && (k.row.Rejected || k.row.SoftFailed) && k.pdu != nil {
				for _, p := range k.pdu.PrevEventIDs() {
					if !out[p] {
						further = append(further, p)
					}
				}
			}
		}
		next = further
	}
	return out, nil
}

// output encodes an output and stores it in the outbox (storeOutput).
func (rt *remoteTx) output(out api.OutputRoomEvent) error {
	o, err := rt.in.storeOutput(rt.w, rt.roomID, out)
	if err != nil {
		return err
	}
	rt.outbound = append(rt.outbound, o)
	return nil
}

// latest returns the room's current forward extremities.
func (rt *remoteTx) latest(ctx context.Context) ([]*knownEvent, error) {
	var out []*knownEvent
	var missing []types.EventNID
	for _, n := range rt.h.room.Latest {
		if k, ok := rt.byNID[n]; ok {
			out = append(out, k)
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := rt.in.db.EventsByNID(ctx, missing)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		k, ok := rt.known[r.EventID]
		if !ok {
			k = &knownEvent{row: r}
			if k.pdu, err = api.ParseTrusted(rt.h.room.RoomVersion, r.EventID, r.JSON, r.Redacted); err != nil {
				return nil, err
			}
			rt.remember(k)
		}
		out = append(out, k)
	}
	return out, nil
}

// applyDelta records a change of current state: memberships, and the output's added and
// removed state.
func (rt *remoteTx) applyDelta(ctx context.Context, out *api.OutputNewRoomEvent, added, removed []types.StateEntry) error {
	nids := make([]types.EventNID, len(added))
	for i, e := range added {
		nids[i] = e.Event
	}
	addedPDUs, err := rt.pdus(ctx, nids)
	if err != nil {
		return err
	}
	for _, p := range addedPDUs {
		out.AddsStateEventIDs = append(out.AddsStateEventIDs, p.EventID())
		if p.EventID() != out.Event.EventID() && len(addedPDUs) <= maxInlineStateEvents {
			out.AddsStateEvents = append(out.AddsStateEvents, api.Event{PDU: p})
		}
		if p.Type() == spec.MRoomMember && p.StateKey() != nil {
			membership, _ := p.Membership()
			if err = rt.w.SetMembership(rt.h.room.NID, storage.Membership{UserID: *p.StateKey(), Membership: membership, EventID: p.EventID()}); err != nil {
				return err
			}
		}
	}
	nids = nids[:0]
	for _, e := range removed {
		nids = append(nids, e.Event)
	}
	removedPDUs, err := rt.pdus(ctx, nids)
	if err != nil {
		return err
	}
	for _, p := range removedPDUs {
		out.RemovesStateEventIDs = append(out.RemovesStateEventIDs, p.EventID())
	}
	return nil
}

func (rt *remoteTx) historyVisibility(ctx context.Context, st *types.State) (string, error) {
	evs, err := rt.lookup(ctx, st, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomHistoryVisibility}})
	if err != nil || len(evs) == 0 {
		return string(gomatrixserverlib.HistoryVisibilityShared), err
	}
	hv, err := evs[0].HistoryVisibility()
	if err != nil {
		return string(gomatrixserverlib.HistoryVisibilityShared), nil
	}
	return string(hv), nil
}

// redact applies a redaction from another server to its target when the target is stored
// and the redaction may redact it (mayRedact). It returns the ID of the event it redacted,
// "" when none. A target that arrives later is redacted on arrival (redactedByEarlier).
func (rt *remoteTx) redact(ctx context.Context, ev gomatrixserverlib.PDU, before *types.State) (string, error) {
	target, err := rt.event(ctx, ev.Redacts())
	if err != nil || target == nil || target.pdu == nil || target.row.RoomNID != rt.h.room.NID || target.row.Redacted {
		return "", err
	}
	if ok, err := rt.mayRedact(ctx, ev, before, target.pdu); !ok || err != nil {
		return "", err
	}
	redacted, err := rt.version.RedactEventJSON(target.pdu.JSON())
	if err != nil {
		return "", err
	}
	if err = rt.w.RedactEvent(target.row.NID, redacted); err != nil {
		return "", fmt.Errorf("redact %s: %w", target.row.EventID, err)
	}
	target.row.Redacted = true
	rt.redacted = append(rt.redacted, target.row.NID)
	rt.redactedJSON[target.row.EventID] = redacted
	return target.row.EventID, nil
}

// mayRedact reports whether a redaction from another server, with the state before it,
// may redact target: the servers of their senders are the same (the redacting server
// vouches for its own users), or the redaction's sender has the power to redact.
func (rt *remoteTx) mayRedact(ctx context.Context, redaction gomatrixserverlib.PDU, before *types.State, target gomatrixserverlib.PDU) (bool, error) {
	sender, err1 := spec.NewUserID(string(redaction.SenderID()), true)
	targetSender, err2 := spec.NewUserID(string(target.SenderID()), true)
	if err1 == nil && err2 == nil && sender.Domain() == targetSender.Domain() {
		return true, nil
	}
	power, err := rt.lookup(ctx, before, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels}})
	if err != nil {
		return false, err
	}
	auth, err := gomatrixserverlib.NewAuthEvents(power)
	if err != nil {
		return false, err
	}
	return powerToRedact(redaction, auth), nil
}

// redactedByEarlier returns ev redacted when a redaction of it, placed before ev arrived
// (received ahead of its target, or backfilled a page earlier), may redact it; otherwise
// ev as it is.
func (rt *remoteTx) redactedByEarlier(ctx context.Context, ev gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	if ev.Redacted() || rt.h.room.NID == 0 {
		return ev, nil
	}
	if rt.redactions == nil {
		has, err := rt.w.HasRedactions(rt.h.room.NID)
		if err != nil {
			return nil, fmt.Errorf("look up redactions: %w", err)
		}
		rt.redactions = &has
	}
	if !*rt.redactions {
		return ev, nil // the usual case, and one query for a join's whole state
	}
	rows, err := rt.w.RedactionsOf(rt.h.room.NID, ev.EventID())
	if err != nil {
		return nil, fmt.Errorf("look up redactions of %s: %w", ev.EventID(), err)
	}
	for _, r := range rows {
		redaction, err := api.ParseTrusted(rt.h.room.RoomVersion, r.EventID, r.JSON, r.Redacted)
		if err != nil {
			return nil, err
		}
		before, err := rt.loadState(ctx, r.Before)
		if err != nil {
			return nil, err
		}
		ok, err := rt.mayRedact(ctx, redaction, before, ev)
		if err != nil {
			return nil, err
		}
		if ok {
			redacted, err := rt.version.RedactEventJSON(ev.JSON())
			if err != nil {
				return nil, err
			}
			return api.ParseTrusted(rt.h.room.RoomVersion, ev.EventID(), redacted, true)
		}
	}
	return ev, nil
}
