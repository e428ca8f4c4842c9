package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventcontent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// draft is a message's view of its room while its local events are decided: the room's
// current state in the batch, with the message's events decided so far laid over it. The
// message's events are placed once all are decided, so that an atomic message is placed
// whole or not at all.
type draft struct {
	rt     *roomTx
	exists bool
	// overlay holds state changed by the message's decided events.
	overlay   map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU
	latestIDs []string
	depth     int64
	// txns are the room's transactions with those of the message's decided events.
	txns map[api.TransactionID]string
	// decided are the message's decided events, by ID, for redactions of fresh events.
	decided map[string]gomatrixserverlib.PDU
}

// localEvent is a decided local event: built and checked, or a repeated send answered with
// the first one's event ID (pdu nil).
type localEvent struct {
	pdu    gomatrixserverlib.PDU
	txnID  *api.TransactionID
	result api.Result
}

// applyLocal decides the events of a message from this server's clients (api.KindNew) and
// places them: each proto-event is built from the current state (with the message's
// earlier events), and placed with that state as the state before it. Refused events get
// their error in the results; in an Atomic message one refusal refuses them all and
// nothing is placed.
func (rt *roomTx) applyLocal(ctx context.Context, msg *api.InputRoomEvents) ([]api.Result, error) {
	if err := rt.useVersion(msg.RoomVersion); err != nil {
		return failAll(len(msg.Events), matrixerr.UnsupportedRoomVersion(err.Error())), nil
	}
	d := &draft{
		rt: rt, exists: rt.h.room.NID != 0, overlay: map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{},
		latestIDs: rt.h.latestIDs, depth: rt.h.room.Depth, txns: maps.Clone(rt.txns), decided: map[string]gomatrixserverlib.PDU{},
	}
	res := make([]api.Result, len(msg.Events))
	var decided []*localEvent
	for i := range msg.Events {
		le, err := d.decide(ctx, &msg.Events[i])
		var merr *matrixerr.Error
		switch {
		case errors.As(err, &merr):
			if msg.Atomic {
				return failAll(len(msg.Events), merr), nil
			}
			res[i] = api.Result{Err: merr}
		case err != nil:
			return nil, err
		default:
			res[i] = le.result
			if le.pdu != nil {
				decided = append(decided, le)
			}
		}
	}
	for _, le := range decided {
		if err := rt.place(ctx, le.pdu, rt.current(), placement{txnID: le.txnID}); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// lookup returns the state event for a tuple, or nil: the message's own when it changed
// it, else the room's current one (roomTx.lookup).
func (d *draft) lookup(ctx context.Context, t gomatrixserverlib.StateKeyTuple) (gomatrixserverlib.PDU, error) {
	if ev, ok := d.overlay[t]; ok {
		return ev, nil
	}
	evs, err := d.rt.lookup(ctx, d.rt.h.state, []gomatrixserverlib.StateKeyTuple{t})
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}

func (d *draft) authProvider(ctx context.Context, needed gomatrixserverlib.StateNeeded) (*gomatrixserverlib.AuthEvents, error) {
	var pdus []gomatrixserverlib.PDU
	for _, t := range needed.Tuples() {
		ev, err := d.lookup(ctx, t)
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
func (d *draft) checkCreate(ev gomatrixserverlib.PDU) error {
	if d.exists {
		return matrixerr.RoomInUse("room already exists")
	}
	if ev.Type() != spec.MRoomCreate || !ev.StateKeyEquals("") {
		return matrixerr.BadJSON("the first event of a room must be its create event")
	}
	if ev.RoomID().String() != d.rt.roomID {
		return matrixerr.BadJSON("create event is for another room")
	}
	if err := eventcontent.Validate(ev.Version(), ev.Type(), ev.StateKey(), ev.Content()); err != nil {
		return err
	}
	empty, _ := gomatrixserverlib.NewAuthEvents(nil)
	return localAuthError(allowed(ev, empty))
}

// build completes a local proto event against the room's current state and checks it.
func (d *draft) build(ctx context.Context, pe *api.ProtoEvent) (gomatrixserverlib.PDU, *gomatrixserverlib.AuthEvents, error) {
	in, version := d.rt.in, d.rt.version
	if !d.exists {
		return nil, nil, matrixerr.Forbidden("unknown room")
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID:   pe.Sender,
		RoomID:     d.rt.roomID,
		Type:       pe.Type,
		StateKey:   pe.StateKey,
		Content:    spec.RawJSON(pe.Content),
		Redacts:    pe.Redacts,
		PrevEvents: d.latestIDs,
		Depth:      d.depth + 1,
		Version:    version,
	}
	if len(proto.Content) == 0 {
		proto.Content = spec.RawJSON("{}")
	}
	if err := eventcontent.Validate(version.Version(), pe.Type, pe.StateKey, proto.Content); err != nil {
		return nil, nil, err
	}
	if err := in.checkLocalInvite(pe); err != nil {
		return nil, nil, err
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&proto)
	if err != nil {
		return nil, nil, matrixerr.BadJSON("the event's content does not say what its auth events are")
	}
	needed = specStateNeeded(needed, version.Version(), pe.Type, spec.SenderID(pe.Sender))
	provider, err := d.authProvider(ctx, needed)
	if err != nil {
		return nil, nil, err
	}
	eb := version.NewEventBuilderFromProtoEvent(&proto)
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

// checkRedaction holds a local user's redaction to the client-server rule ("Redactions":
// a user may redact its own events, and others' with a power level at least the redact
// level): its target, when the target is a known event of the room, must be the sender's,
// or the sender must have that power. Whether the redaction is applied is decided when it
// is placed (roomTx.redact), by the same rule as every redaction.
func (d *draft) checkRedaction(ctx context.Context, ev gomatrixserverlib.PDU, provider *gomatrixserverlib.AuthEvents) error {
	target := d.decided[ev.Redacts()]
	if target == nil {
		k, err := d.rt.event(ctx, ev.Redacts())
		if err != nil {
			return err
		}
		if k == nil || k.pdu == nil || k.row.RoomNID != d.rt.h.room.NID || k.row.Rejected {
			return nil
		}
		target = k.pdu
	}
	if target.SenderID() != ev.SenderID() && !powerToRedact(ev, provider) {
		return matrixerr.Forbidden("insufficient power level to redact this event")
	}
	return nil
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

// decide builds and checks one local event. A refusal is returned as a *matrixerr.Error;
// any other error is an internal failure that makes the whole batch retry.
func (d *draft) decide(ctx context.Context, ie *api.InputRoomEvent) (*localEvent, error) {
	if ie.TxnID != nil {
		if id, ok := d.txns[*ie.TxnID]; ok {
			return &localEvent{result: api.Result{EventID: id}}, nil
		}
	}
	var ev gomatrixserverlib.PDU
	var provider *gomatrixserverlib.AuthEvents
	switch {
	case ie.Kind == api.KindNew && ie.Event != nil && ie.Event.PDU != nil:
		ev = ie.Event.PDU
		if err := d.checkCreate(ev); err != nil {
			return nil, err
		}
	case ie.Kind == api.KindNew && ie.Proto != nil:
		var err error
		if ev, provider, err = d.build(ctx, ie.Proto); err != nil {
			return nil, err
		}
	default:
		return nil, matrixerr.BadJSON(fmt.Sprintf("unsupported input kind %q", ie.Kind))
	}
	if ev.Type() == spec.MRoomRedaction && ev.Redacts() != "" {
		if err := d.checkRedaction(ctx, ev, provider); err != nil {
			return nil, err
		}
	}
	if sk := ev.StateKey(); sk != nil {
		d.overlay[gomatrixserverlib.StateKeyTuple{EventType: ev.Type(), StateKey: *sk}] = ev
	}
	if ev.Type() == spec.MRoomCreate {
		d.exists = true
	}
	d.latestIDs = []string{ev.EventID()}
	d.depth = ev.Depth()
	d.decided[ev.EventID()] = ev
	if ie.TxnID != nil {
		d.txns[*ie.TxnID] = ev.EventID()
	}
	return &localEvent{pdu: ev, txnID: ie.TxnID, result: api.Result{EventID: ev.EventID()}}, nil
}
