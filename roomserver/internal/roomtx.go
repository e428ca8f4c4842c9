package internal

import (
	"context"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// maxInlineStateEvents bounds how many added state events an output carries inline;
// beyond it readers fetch them by ID (a remote join adds the whole room state at once).
const maxInlineStateEvents = 50

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

// roomTx is one room inside a batch's write transaction: the one engine that places
// events, local and remote alike. It owns what the batch knows of the room (events,
// snapshots, the head it advances, the transaction IDs of local sends) and what the batch
// produces for it (inserted and redacted events, outputs). Every event goes through place
// with the state before it: a local event is built from the current state and placed with
// it (local.go); an event from another server is placed with the state computed from its
// prev events, forks resolved (remote.go). It remembers what it stored, since the
// transaction's writes are not visible to the database reads (which go through the cache
// and the pool).
type roomTx struct {
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
	absent map[string]bool
	byNID  map[types.EventNID]*knownEvent
	snaps  map[types.SnapshotNID]*types.State
	// txns are the transaction IDs of local sends stored before the batch or placed in it,
	// with their events' IDs.
	txns     map[api.TransactionID]string
	inserted []cachedEvent
	redacted []types.EventNID
	// redactedJSON is the redacted form of each event redacted in this transaction, by ID.
	redactedJSON map[string][]byte
	// redactions is whether the room has stored redactions: unknown (nil) until asked,
	// then true once one is stored in this transaction.
	redactions *bool
	outbound   []storage.Outbound
	// backfilled are the outputs of the current message's backfilled events, oldest
	// first; they are stored newest first once the message is applied (api.KindBackfilled).
	backfilled []api.OutputBackfilledEvent
}

func newRoomTx(in *Inputer, w storage.Writer, roomID string, head *roomHead, txns map[api.TransactionID]string) *roomTx {
	rt := &roomTx{
		in: in, w: w, roomID: roomID, txns: txns,
		known: map[string]*knownEvent{}, absent: map[string]bool{}, byNID: map[types.EventNID]*knownEvent{}, snaps: map[types.SnapshotNID]*types.State{},
		redactedJSON: map[string][]byte{},
	}
	if head == nil {
		rt.h = &roomHead{room: storage.Room{RoomID: roomID}, state: &types.State{}}
	} else {
		h := *head
		h.room.Latest = append([]types.EventNID(nil), head.room.Latest...)
		h.latestIDs = append([]string(nil), head.latestIDs...)
		rt.h = &h
	}
	return rt
}

// useVersion settles the room version for a message: the stored room's, or, while nothing
// of the room is stored, the one the message names. It fails for a version this server
// does not support.
func (rt *roomTx) useVersion(version string) error {
	if rt.h.room.NID == 0 {
		rt.h.room.RoomVersion = version
	}
	var err error
	rt.version, err = gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(rt.h.room.RoomVersion))
	return err
}

// current is the room's current state.
func (rt *roomTx) current() stateRef {
	return stateRef{nid: rt.h.room.Snapshot, st: rt.h.state}
}

// event returns a stored event by ID, or nil.
func (rt *roomTx) event(ctx context.Context, id string) (*knownEvent, error) {
	evs, err := rt.events(ctx, []string{id})
	if err != nil {
		return nil, err
	}
	return evs[id], nil
}

// events returns the stored events among ids, looked up in one query.
func (rt *roomTx) events(ctx context.Context, ids []string) (map[string]*knownEvent, error) {
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
func (rt *roomTx) prefetch(ctx context.Context, msg *api.InputRoomEvents) error {
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

func (rt *roomTx) remember(k *knownEvent) {
	rt.known[k.row.EventID] = k
	rt.byNID[k.row.NID] = k
}

// pdus returns events of the room by NID, in order.
func (rt *roomTx) pdus(ctx context.Context, nids []types.EventNID) ([]gomatrixserverlib.PDU, error) {
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

// lookup returns the events st holds for tuples (absent ones left out).
func (rt *roomTx) lookup(ctx context.Context, st *types.State, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
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

// loadState returns a stored snapshot.
func (rt *roomTx) loadState(ctx context.Context, nid types.SnapshotNID) (*types.State, error) {
	if st, ok := rt.snaps[nid]; ok {
		return st, nil
	}
	if nid != 0 && nid == rt.h.room.Snapshot {
		return rt.h.state, nil // the current state, in memory: the usual case in a linear room
	}
	return rt.in.cache.loadState(ctx, nid)
}

// stateAfter is the state after a timeline event.
func (rt *roomTx) stateAfter(ctx context.Context, k *knownEvent) (stateRef, error) {
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
// The empty state (before a create event) is snapshot 0 and never stored.
func (rt *roomTx) storeState(s stateRef) (types.SnapshotNID, error) {
	if s.nid != 0 || s.st.Len() == 0 {
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

func (rt *roomTx) ensureRoom() error {
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
func (rt *roomTx) insert(ctx context.Context, ev gomatrixserverlib.PDU, place storage.Event) (*knownEvent, error) {
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
func (rt *roomTx) resolve(ctx context.Context, states []stateRef) (stateRef, error) {
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
func (rt *roomTx) authChain(ctx context.Context, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
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

// placement says how place stores an event besides the state before it.
type placement struct {
	// existing is the stored outlier that the event turns into a timeline event.
	existing *knownEvent
	// txnID is the local client's transaction, stored with the event and in its output.
	txnID *api.TransactionID
	// softFailed: the event passed auth against the state before it but not against the
	// current state; it is stored and nothing else happens.
	softFailed bool
	// stale: a local user's join through another server replaces a stale copy of the
	// room (api.KindRemoteJoin, staleCopy).
	stale bool
	// backfilled: the event is older than the timeline; the current state, extremities
	// and depth stay as they are (api.KindBackfilled).
	backfilled bool
}

// place is the one way an event enters the room's timeline, whatever its origin: it is
// stored with the state before it (storing that state when it is new), then, unless it
// was soft-failed, it advances the room (forward extremities, current state, memberships,
// redaction of its target) and its output is stored. The caller has checked the event.
func (rt *roomTx) place(ctx context.Context, ev gomatrixserverlib.PDU, before stateRef, p placement) error {
	var err error
	if before.nid, err = rt.storeState(before); err != nil {
		return err
	}
	k := p.existing
	if k != nil {
		if err = rt.w.PlaceEvent(k.row.NID, before.nid, p.softFailed); err != nil {
			return fmt.Errorf("place outlier %s: %w", ev.EventID(), err)
		}
		k.row.Outlier, k.row.Before, k.row.SoftFailed = false, before.nid, p.softFailed
	} else if k, err = rt.insert(ctx, ev, storage.Event{Before: before.nid, SoftFailed: p.softFailed}); err != nil {
		return err
	}
	if t := p.txnID; t != nil {
		if err = rt.w.InsertTransaction(rt.h.room.NID, storage.Transaction{UserID: t.UserID, DeviceID: t.DeviceID, TxnID: t.TransactionID, EventID: ev.EventID()}); err != nil {
			return fmt.Errorf("store transaction of %s: %w", ev.EventID(), err)
		}
		rt.txns[*t] = ev.EventID()
	}
	switch {
	case p.softFailed:
		return nil
	case p.backfilled:
		return rt.outputBackfill(ctx, k, before)
	}
	return rt.advance(ctx, k, before, p)
}

// outputBackfill applies a backfilled event's redaction and keeps its output for
// outputBackfilled.
func (rt *roomTx) outputBackfill(ctx context.Context, k *knownEvent, before stateRef) error {
	out := api.OutputBackfilledEvent{Event: api.Event{PDU: k.pdu}}
	var err error
	if out.HistoryVisibility, err = rt.historyVisibility(ctx, before.st); err != nil {
		return err
	}
	if out.RedactsEventID, err = rt.redact(ctx, k.pdu, before.st); err != nil {
		return err
	}
	rt.backfilled = append(rt.backfilled, out)
	return nil
}

// advance makes a placed, not soft-failed event a forward extremity in place of its
// prev_events, moves the current state to the resolution of the extremities' states,
// redacts the event's target, and stores the output. An event whose prev_events include
// every extremity (every local event, and a federated one in a linear room) becomes the
// only extremity and the state after it the current state, with no resolution; so does a
// local user's join that replaces a stale copy (placement.stale): the copy's extremities
// are events the other servers built on long ago, and resolving the join's state against
// theirs would bring back what changed since.
func (rt *roomTx) advance(ctx context.Context, k *knownEvent, before stateRef, p placement) error {
	ev := k.pdu
	after, err := rt.stateAfter(ctx, k)
	if err != nil {
		return err
	}
	next := after
	latest, latestIDs := []types.EventNID{k.row.NID}, []string{ev.EventID()}
	if !p.stale && !rt.extendsAll(ev) {
		if next, latest, latestIDs, err = rt.fork(ctx, k, after); err != nil {
			return err
		}
	}
	added, removed := rt.h.state.Diff(next.st)
	out := api.OutputNewRoomEvent{Event: api.Event{PDU: ev}, TxnID: p.txnID}
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
	if out.RedactsEventID, err = rt.redact(ctx, ev, before.st); err != nil {
		return err
	}
	return rt.output(api.OutputRoomEvent{Type: api.OutputTypeNewRoomEvent, NewRoomEvent: &out}, k.row.NID)
}

// extendsAll reports whether ev names every forward extremity of the room as a prev event.
func (rt *roomTx) extendsAll(ev gomatrixserverlib.PDU) bool {
	if len(rt.h.latestIDs) != len(rt.h.room.Latest) {
		return false
	}
	prevs := ev.PrevEventIDs()
	for _, id := range rt.h.latestIDs {
		if !slices.Contains(prevs, id) {
			return false
		}
	}
	return true
}

// fork is advance for an event that may leave other extremities in place: the new
// extremities are the event and those it does not supersede, and the new current state
// is the resolution of the states after them.
func (rt *roomTx) fork(ctx context.Context, k *knownEvent, after stateRef) (stateRef, []types.EventNID, []string, error) {
	prevs, err := rt.superseded(ctx, k.pdu)
	if err != nil {
		return stateRef{}, nil, nil, err
	}
	latestRows, err := rt.latest(ctx)
	if err != nil {
		return stateRef{}, nil, nil, err
	}
	states := []stateRef{after}
	latest, latestIDs := []types.EventNID{k.row.NID}, []string{k.pdu.EventID()}
	for _, l := range latestRows {
		if prevs[l.row.EventID] {
			continue
		}
		latest, latestIDs = append(latest, l.row.NID), append(latestIDs, l.row.EventID)
		s, err := rt.stateAfter(ctx, l)
		if err != nil {
			return stateRef{}, nil, nil, err
		}
		states = append(states, s)
	}
	if len(states) == 1 {
		return after, latest, latestIDs, nil
	}
	next, err := rt.resolve(ctx, states)
	return next, latest, latestIDs, err
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
func (rt *roomTx) superseded(ctx context.Context, ev gomatrixserverlib.PDU) (map[string]bool, error) {
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

// output encodes an output and stores it in the outbox (storeOutput); nid, when not 0, is
// the stored event the output carries.
func (rt *roomTx) output(out api.OutputRoomEvent, nid types.EventNID) error {
	o, err := rt.in.storeOutput(rt.w, rt.roomID, out, nid)
	if err != nil {
		return err
	}
	rt.outbound = append(rt.outbound, o)
	return nil
}

// latest returns the room's current forward extremities.
func (rt *roomTx) latest(ctx context.Context) ([]*knownEvent, error) {
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
func (rt *roomTx) applyDelta(ctx context.Context, out *api.OutputNewRoomEvent, added, removed []types.StateEntry) error {
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

// historyVisibility is the history visibility a state holds (shared without one, or when
// its content does not parse): that of the state before an event is the event's.
func (rt *roomTx) historyVisibility(ctx context.Context, st *types.State) (string, error) {
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

// redact applies a redaction, local or from another server, to its target when the
// target is a stored, not rejected event of the room and the redaction may redact it
// (mayRedact). It returns the ID of the event it redacted, "" when none (ev is no
// redaction, or the target is unknown, already redacted or not to be redacted). A target
// that arrives later is redacted on arrival (redactedByEarlier).
func (rt *roomTx) redact(ctx context.Context, ev gomatrixserverlib.PDU, before *types.State) (string, error) {
	if ev.Type() != spec.MRoomRedaction || ev.Redacts() == "" {
		return "", nil
	}
	target, err := rt.event(ctx, ev.Redacts())
	if err != nil || target == nil || target.pdu == nil || target.row.RoomNID != rt.h.room.NID || target.row.Redacted || target.row.Rejected {
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

// mayRedact is the one rule for applying a redaction, whatever its origin (spec, room
// versions 3 and later, "Handling redactions"; the v1 auth rules say the same of event ID
// domains): with the state before the redaction, it may redact target when the servers of
// their senders are the same (the redacting server vouches for its own users), or when the
// redaction's sender has the power to redact (powerToRedact). A local user is held to the
// client-server rule when the redaction is built (checkRedaction).
func (rt *roomTx) mayRedact(ctx context.Context, redaction gomatrixserverlib.PDU, before *types.State, target gomatrixserverlib.PDU) (bool, error) {
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
func (rt *roomTx) redactedByEarlier(ctx context.Context, ev gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
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
