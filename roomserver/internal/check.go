package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventcontent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// pendingRoom is a room as it will be once the events accepted so far in the current batch
// are committed. Auth decisions for later events in the batch are made against it.
type pendingRoom struct {
	head    *roomHead // nil for a room created in this batch
	roomID  string
	version gomatrixserverlib.IRoomVersion
	exists  bool
	// overlay holds state changed by accepted events of this batch.
	overlay   map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU
	latestIDs []string
	depth     int64
	// txns are the transactions of events accepted in this batch, and the stored ones of
	// the batch's transaction IDs (loaded once for the batch by loadTxns).
	txns map[api.TransactionID]string
	// accepted are the events of this batch, by ID, for redactions of fresh events.
	accepted map[string]gomatrixserverlib.PDU
}

func (p *pendingRoom) clone() *pendingRoom {
	c := *p
	c.overlay = make(map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU, len(p.overlay))
	for k, v := range p.overlay {
		c.overlay[k] = v
	}
	c.latestIDs = append([]string(nil), p.latestIDs...)
	c.txns = make(map[api.TransactionID]string, len(p.txns))
	for k, v := range p.txns {
		c.txns[k] = v
	}
	c.accepted = make(map[string]gomatrixserverlib.PDU, len(p.accepted))
	for k, v := range p.accepted {
		c.accepted[k] = v
	}
	return &c
}

// accepted is an event that passed its checks, with what writing it needs.
type acceptedEvent struct {
	room  *pendingRoom
	pdu   gomatrixserverlib.PDU
	txnID *api.TransactionID
	// replaced is the state event this one replaces in current state, if any.
	replaced          gomatrixserverlib.PDU
	historyVisibility string
	// redacts is the event this redaction applies to, when known and allowed.
	redacts gomatrixserverlib.PDU
	result  *api.Result
}

func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// lookup returns the state event for a tuple in the pending room, or nil.
func (in *Inputer) lookup(ctx context.Context, p *pendingRoom, t gomatrixserverlib.StateKeyTuple) (gomatrixserverlib.PDU, error) {
	if ev, ok := p.overlay[t]; ok {
		return ev, nil
	}
	if p.head == nil {
		return nil, nil
	}
	nt, err := in.cache.tuples(ctx, []gomatrixserverlib.StateKeyTuple{t})
	if err != nil {
		return nil, err
	}
	nid := p.head.state.Lookup(nt[0])
	if nid == 0 {
		return nil, nil
	}
	evs, err := in.cache.eventsByNID(ctx, p.head.room.RoomVersion, []types.EventNID{nid})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

func (in *Inputer) authProvider(ctx context.Context, p *pendingRoom, needed gomatrixserverlib.StateNeeded) (*gomatrixserverlib.AuthEvents, error) {
	var pdus []gomatrixserverlib.PDU
	for _, t := range needed.Tuples() {
		ev, err := in.lookup(ctx, p, t)
		if err != nil {
			return nil, err
		}
		if ev != nil {
			pdus = append(pdus, ev)
		}
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}

// checkCreate accepts the complete create event of a new room.
func (in *Inputer) checkCreate(p *pendingRoom, ev gomatrixserverlib.PDU) error {
	if p.exists {
		return matrixerr.RoomInUse("room already exists")
	}
	if ev.Type() != spec.MRoomCreate || !ev.StateKeyEquals("") {
		return matrixerr.BadJSON("the first event of a room must be its create event")
	}
	if ev.RoomID().String() != p.roomID {
		return matrixerr.BadJSON("create event is for another room")
	}
	if err := eventcontent.Validate(ev.Version(), ev.Type(), ev.StateKey(), ev.Content()); err != nil {
		return err
	}
	empty, _ := gomatrixserverlib.NewAuthEvents(nil)
	return localAuthError(allowed(ev, empty))
}

// build completes a local proto event against the pending room and checks it.
func (in *Inputer) build(ctx context.Context, p *pendingRoom, pe *api.ProtoEvent) (gomatrixserverlib.PDU, *gomatrixserverlib.AuthEvents, error) {
	if !p.exists {
		return nil, nil, matrixerr.Forbidden("unknown room")
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID:   pe.Sender,
		RoomID:     p.roomID,
		Type:       pe.Type,
		StateKey:   pe.StateKey,
		Content:    spec.RawJSON(pe.Content),
		Redacts:    pe.Redacts,
		PrevEvents: p.latestIDs,
		Depth:      p.depth + 1,
		Version:    p.version,
	}
	if len(proto.Content) == 0 {
		proto.Content = spec.RawJSON("{}")
	}
	if err := eventcontent.Validate(p.version.Version(), pe.Type, pe.StateKey, proto.Content); err != nil {
		return nil, nil, err
	}
	if err := in.checkLocalInvite(pe); err != nil {
		return nil, nil, err
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&proto)
	if err != nil {
		return nil, nil, matrixerr.BadJSON("the event's content does not say what its auth events are")
	}
	needed = specStateNeeded(needed, p.version.Version(), pe.Type, spec.SenderID(pe.Sender))
	provider, err := in.authProvider(ctx, p, needed)
	if err != nil {
		return nil, nil, err
	}
	eb := p.version.NewEventBuilderFromProtoEvent(&proto)
	if err = eb.AddAuthEvents(provider); err != nil {
		return nil, nil, matrixerr.Forbidden(err.Error())
	}
	if pe.Type == spec.MRoomAliases {
		// The spec's selection, where it is more than gomatrixserverlib's (specStateNeeded).
		if eb.AuthEvents, err = needed.AuthEventReferences(provider); err != nil {
			return nil, nil, err
		}
	}
	ev, err := eb.Build(time.Now(), in.serverName, in.keyID, in.key)
	var verr gomatrixserverlib.EventValidationError
	if errors.As(err, &verr) && verr.Code == gomatrixserverlib.EventValidationTooLarge {
		return nil, nil, matrixerr.TooLarge(verr.Message)
	}
	if err != nil {
		return nil, nil, matrixerr.BadJSON(err.Error())
	}
	if err = localAuthError(allowed(ev, provider)); err != nil {
		return nil, nil, err
	}
	return ev, provider, nil
}

// checkLocalInvite refuses a local invite of another server's user. Such an invite is
// only valid with the invitee's server's signature and only useful once that server has
// it: it goes through the federationapi (invite v2), which inputs the countersigned event
// as a federated one. Made here it would be stored and shown as an invite that never
// reaches the invitee, whose later join then fails the auth rules.
func (in *Inputer) checkLocalInvite(pe *api.ProtoEvent) error {
	if pe.Type != spec.MRoomMember || pe.StateKey == nil {
		return nil
	}
	var c struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(pe.Content, &c) != nil || c.Membership != spec.Invite {
		return nil
	}
	if target, err := spec.NewUserID(*pe.StateKey, true); err == nil && target.Domain() != in.serverName {
		return matrixerr.Forbidden("an invite of another server's user must be sent to that server")
	}
	return nil
}

// localAuthError is the client's answer for a local event the auth rules refuse: content
// that does not parse is 400 M_BAD_JSON, any other refusal 403 M_FORBIDDEN.
func localAuthError(err error) error {
	if err == nil {
		return nil
	}
	var merr *matrixerr.Error
	if errors.As(err, &merr) {
		return merr
	}
	return matrixerr.Forbidden(err.Error())
}

// redactionTarget returns the event a redaction applies to, checking that the sender may
// redact it: its own event, or one it has the power to redact.
func (in *Inputer) redactionTarget(ctx context.Context, p *pendingRoom, ev gomatrixserverlib.PDU, provider *gomatrixserverlib.AuthEvents) (gomatrixserverlib.PDU, error) {
	targetID := ev.Redacts()
	target := p.accepted[targetID]
	if target == nil {
		rows, err := in.db.EventsByID(ctx, []string{targetID})
		if err != nil {
			return nil, err
		}
		if len(rows) == 0 || p.head == nil || rows[0].RoomNID != p.head.room.NID || rows[0].Rejected {
			return nil, nil
		}
		evs, err := in.cache.eventsByNID(ctx, p.head.room.RoomVersion, []types.EventNID{rows[0].NID})
		if err != nil {
			return nil, err
		}
		target = evs[0]
	}
	if target.SenderID() == ev.SenderID() {
		return target, nil
	}
	if !powerToRedact(ev, provider) {
		return nil, matrixerr.Forbidden("insufficient power level to redact this event")
	}
	return target, nil
}

// powerToRedact reports whether the redaction's sender has the power to redact others'
// events: a power level at least the redact level in force. auth holds the room's create
// and power levels events (either may be missing) as the auth rules read them: the
// creators of a v12+ room have infinite power, and without power levels the creator has
// 100 and the redact level is 50. Power levels that do not parse give nobody that power.
func powerToRedact(redaction gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents) bool {
	rp, err := roomPowerOf(redaction, auth)
	if err != nil {
		return false
	}
	return !rp.user(string(redaction.SenderID())).below(rp.level("redact"))
}

// historyVisibility is the pending room's history visibility.
func (in *Inputer) historyVisibility(ctx context.Context, p *pendingRoom) (string, error) {
	ev, err := in.lookup(ctx, p, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomHistoryVisibility})
	if err != nil || ev == nil {
		return string(gomatrixserverlib.HistoryVisibilityShared), err
	}
	hv, err := ev.HistoryVisibility()
	if err != nil {
		return string(gomatrixserverlib.HistoryVisibilityShared), nil
	}
	return string(hv), nil
}

// checkEvent decides one input event. A rejection is returned as a *matrixerr.Error; any
// other error is an internal failure that makes the whole batch retry.
func (in *Inputer) checkEvent(ctx context.Context, p *pendingRoom, ie *api.InputRoomEvent) (*acceptedEvent, error) {
	if ie.TxnID != nil {
		if id, ok := p.txns[*ie.TxnID]; ok {
			return &acceptedEvent{result: &api.Result{EventID: id}}, nil
		}
	}
	var ev gomatrixserverlib.PDU
	var provider *gomatrixserverlib.AuthEvents
	switch {
	case ie.Kind == api.KindNew && ie.Event != nil && ie.Event.PDU != nil:
		ev = ie.Event.PDU
		if err := in.checkCreate(p, ev); err != nil {
			return nil, err
		}
	case ie.Kind == api.KindNew && ie.Proto != nil:
		var err error
		if ev, provider, err = in.build(ctx, p, ie.Proto); err != nil {
			return nil, err
		}
	default:
		return nil, matrixerr.BadJSON(fmt.Sprintf("unsupported input kind %q", ie.Kind))
	}
	acc := &acceptedEvent{room: p, pdu: ev, txnID: ie.TxnID, result: &api.Result{EventID: ev.EventID()}}
	hv, err := in.historyVisibility(ctx, p)
	if err != nil {
		return nil, err
	}
	acc.historyVisibility = hv
	if ev.Type() == spec.MRoomRedaction && ev.Redacts() != "" {
		if acc.redacts, err = in.redactionTarget(ctx, p, ev, provider); err != nil {
			return nil, err
		}
	}
	if sk := ev.StateKey(); sk != nil {
		t := gomatrixserverlib.StateKeyTuple{EventType: ev.Type(), StateKey: *sk}
		if acc.replaced, err = in.lookup(ctx, p, t); err != nil {
			return nil, err
		}
		p.overlay[t] = ev
	}
	if ev.Type() == spec.MRoomCreate {
		p.exists = true
	}
	p.latestIDs = []string{ev.EventID()}
	p.depth = ev.Depth()
	p.accepted[ev.EventID()] = ev
	if ie.TxnID != nil {
		p.txns[*ie.TxnID] = ev.EventID()
	}
	return acc, nil
}

// outputOf is the OutputRoomEvent for an accepted event.
func outputOf(acc *acceptedEvent) api.OutputRoomEvent {
	out := api.OutputNewRoomEvent{
		Event:             api.Event{PDU: acc.pdu},
		HistoryVisibility: acc.historyVisibility,
		TxnID:             acc.txnID,
	}
	if acc.pdu.StateKey() != nil {
		out.AddsStateEventIDs = []string{acc.pdu.EventID()}
		if acc.replaced != nil {
			out.RemovesStateEventIDs = []string{acc.replaced.EventID()}
		}
	}
	if acc.redacts != nil {
		out.RedactsEventID = acc.redacts.EventID()
	}
	return api.OutputRoomEvent{Type: api.OutputTypeNewRoomEvent, NewRoomEvent: &out}
}
