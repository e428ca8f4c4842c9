package internal

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// applyRemote decides and places the events of a message holding events from other
// servers. Each event is decided on its own (Atomic does not apply): see api.KindOutlier
// and api.KindFederated. The message's unstorable events were taken out before the batch's
// transaction (withoutUnstorable); kept maps each remaining event to its index in results.
func (rt *roomTx) applyRemote(ctx context.Context, msg *api.InputRoomEvents, results []api.Result, kept []int) error {
	if rt.useVersion(msg.RoomVersion) != nil {
		copy(results, failAll(len(results), matrixerr.UnsupportedRoomVersion("unknown room or room version")))
		return nil
	}
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
	return rt.outputBackfilled()
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

func reject(err *matrixerr.Error) (api.Result, error) {
	return api.Result{Err: err}, nil
}

// apply decides and stores one event. Rejections come back in the Result; an error is an
// internal failure that makes the message retry.
func (rt *roomTx) apply(ctx context.Context, ie *api.InputRoomEvent) (api.Result, error) {
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
	return rt.placeRemote(ctx, ie, ev, existing)
}

// redactsAnotherRoom refuses a redaction whose target is a stored event of another room:
// it could never apply, and readers must not be shown it (Synapse and Dendrite refuse it
// too; sytest "An event which redacts an event in a different room should be ignored").
func (rt *roomTx) redactsAnotherRoom(ctx context.Context, ev gomatrixserverlib.PDU) (*matrixerr.Error, error) {
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
func (rt *roomTx) rejectAndKeep(ctx context.Context, ie *api.InputRoomEvent, existing *knownEvent, merr *matrixerr.Error) (api.Result, error) {
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

// placeRemote places a federated event, or a backfilled one (api.KindBackfilled, older
// than the room's timeline), from another server: the state before it is computed from its
// prev events, forks resolved (stateBefore); the event is checked against that state
// (rejection, rejectAndKeep) and, unless backfilled, against the current state (soft
// failure), then placed with it. A backfilled event is stored with the state before it so
// that later backfilled events build on it, but the room's current state, extremities and
// depth stay as they are and it is never soft-failed.
func (rt *roomTx) placeRemote(ctx context.Context, ie *api.InputRoomEvent, ev gomatrixserverlib.PDU, existing *knownEvent) (api.Result, error) {
	p := placement{existing: existing, backfilled: ie.Kind == api.KindBackfilled}
	if p.backfilled && len(rt.h.room.Latest) == 0 {
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
	if ie.Kind == api.KindRemoteJoin {
		if p.stale, err = rt.staleCopy(ctx); err != nil {
			return api.Result{}, err
		}
	}
	if !p.backfilled && len(rt.h.room.Latest) > 0 && !p.stale {
		cur, err := rt.authFromState(ctx, rt.h.state, ev)
		if err != nil {
			return api.Result{}, err
		}
		p.softFailed = allowed(ie.Event.PDU, cur) != nil
	}
	if err = rt.place(ctx, ev, before, p); err != nil {
		return api.Result{}, err
	}
	return api.Result{EventID: ev.EventID(), SoftFailed: p.softFailed}, nil
}

// outputBackfilled stores the outputs of the message's backfilled events, newest first
// (see api.OutputBackfilledEvent). An event that a newer one of the message redacted goes
// out redacted: readers store the redaction first.
func (rt *roomTx) outputBackfilled() error {
	for i := len(rt.backfilled) - 1; i >= 0; i-- {
		if redacted, ok := rt.redactedJSON[rt.backfilled[i].Event.EventID()]; ok {
			pdu, err := api.ParseTrusted(rt.h.room.RoomVersion, rt.backfilled[i].Event.EventID(), redacted, true)
			if err != nil {
				return err
			}
			rt.backfilled[i].Event = api.Event{PDU: pdu}
		}
		if err := rt.output(api.OutputRoomEvent{Type: api.OutputTypeBackfilledEvent, BackfilledEvent: &rt.backfilled[i]}, 0); err != nil {
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
func (rt *roomTx) placeable(ctx context.Context, ev gomatrixserverlib.PDU) (bool, error) {
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
func (rt *roomTx) remoteMembership(ctx context.Context, ev gomatrixserverlib.PDU) (api.Result, error) {
	m, err := ev.Membership()
	if err != nil || ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return reject(matrixerr.BadJSON("not a membership event"))
	}
	k, err := rt.insert(ctx, ev, storage.Event{Outlier: true})
	if err != nil {
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
	if err = rt.output(api.OutputRoomEvent{Type: api.OutputTypeNewRoomEvent, NewRoomEvent: &out}, k.row.NID); err != nil {
		return api.Result{}, err
	}
	return api.Result{EventID: ev.EventID()}, nil
}

// staleCopy reports whether no local user is joined in the room's current state here: this
// server then received none of the room's events since its last member left (or never had
// the room), so its copy cannot be trusted over the state a join through another server
// brings (api.KindRemoteJoin).
func (rt *roomTx) staleCopy(ctx context.Context) (bool, error) {
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

// authEvents loads the event's auth_events, all of which must be known events of the room.
func (rt *roomTx) authEvents(ctx context.Context, ev gomatrixserverlib.PDU) (*gomatrixserverlib.AuthEvents, *matrixerr.Error, error) {
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
func (rt *roomTx) authFromState(ctx context.Context, st *types.State, ev gomatrixserverlib.PDU) (*gomatrixserverlib.AuthEvents, error) {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
	needed = specStateNeeded(needed, ev.Version(), ev.Type(), ev.SenderID())
	pdus, err := rt.lookup(ctx, st, needed.Tuples())
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}

// givenState is a state a writer gave as event IDs, all of which must be known state
// events of the room that were not rejected.
func (rt *roomTx) givenState(ctx context.Context, stateIDs []string) (stateRef, *matrixerr.Error, error) {
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
func (rt *roomTx) stateBefore(ctx context.Context, ev gomatrixserverlib.PDU, ie *api.InputRoomEvent) (stateRef, *matrixerr.Error, error) {
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
