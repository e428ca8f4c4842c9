package internal

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventcontent"
	"github.com/matrix-org/dendrite/internal/guestaccess"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// Bounds of what one received event may make us fetch from its origin.
const (
	// missingEventsLimit is the most prev events asked for with /get_missing_events.
	missingEventsLimit = 20
	// maxEventFetches is the most state or auth events fetched one by one with /event;
	// beyond it the whole state is fetched with /state.
	maxEventFetches = 50
)

// Inbound turns events received from other servers into roomserver input: it checks them
// (hashes, signatures, origin), fills gaps before them from the server that sent them and
// writes them to InputRoomEvent. The roomserver itself makes no outbound request.
type Inbound struct {
	ServerName spec.ServerName
	Roomserver rsapi.FederationRoomserverAPI
	// Verifier checks event signatures (the key ring).
	Verifier gomatrixserverlib.JSONVerifier
	Client   fclient.FederationClient
	Logger   *logrus.Entry
	// Accounts tells local guests apart: when a received event revokes a room's guest
	// access, they leave it (nil: they stay).
	Accounts guestaccess.AccountQuerier
}

// Rejected is the reason a received event was refused, safe to tell its sender.
type Rejected struct {
	Reason string
	// ByAuthRules is set when the roomserver refused the event under the room's auth
	// rules: /send answers such an event with an empty result, as handled.
	ByAuthRules bool
}

func (r *Rejected) Error() string { return r.Reason }

func rejectf(format string, args ...any) error {
	return &Rejected{Reason: fmt.Sprintf(format, args...)}
}

// ErrUnknownRoom is returned for events of rooms this server is not in.
var ErrUnknownRoom = &Rejected{Reason: "room unknown to this server"}

func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// RoomVersion returns the version of a room this server knows.
func (ib *Inbound) RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.IRoomVersion, *rsapi.QueryRoomInfoResponse, error) {
	info, err := ib.Roomserver.QueryRoomInfo(ctx, &rsapi.QueryRoomInfoRequest{RoomID: roomID})
	if err != nil {
		return nil, nil, err
	}
	if !info.Exists {
		return nil, nil, ErrUnknownRoom
	}
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(info.RoomVersion))
	return v, info, err
}

// ParseVerified parses an event from another server and checks its signatures. An event
// whose content hash does not match is redacted (and kept), as the spec says; one whose
// signatures do not verify is an error.
func (ib *Inbound) ParseVerified(ctx context.Context, v gomatrixserverlib.IRoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	ev, err := v.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, rejectf("invalid event: %v", err)
	}
	return ev, ib.verify(ctx, ev)
}

// Verify checks the signatures of an event another server sent; its error is a *Rejected,
// safe to tell the sender.
func (ib *Inbound) Verify(ctx context.Context, ev gomatrixserverlib.PDU) error {
	return ib.verify(ctx, ev)
}

// SignedBy checks that ev carries a valid signature of server. An invite arriving for
// countersigning has only its sender's server's signature, which is all that is checked.
func (ib *Inbound) SignedBy(ctx context.Context, ev gomatrixserverlib.PDU, server spec.ServerName) error {
	redacted, err := gomatrixserverlib.MustGetRoomVersion(ev.Version()).RedactEventJSON(ev.JSON())
	if err != nil {
		return rejectf("invalid event: %v", err)
	}
	res, err := ib.Verifier.VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: server, Message: redacted, AtTS: ev.OriginServerTS(), ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		return err
	}
	if len(res) != 1 || res[0].Error != nil {
		return rejectf("event %s is not signed by %s", ev.EventID(), server)
	}
	return nil
}

// verify checks the signatures an event needs: its sender's server's, but for a
// third-party invite the invitee's server's instead, which gomatrixserverlib asks of every
// invite (and, in room versions 1 and 2, the signature of the server of the event ID).
func (ib *Inbound) verify(ctx context.Context, ev gomatrixserverlib.PDU) error {
	senderServer := userIDForSender
	if thirdPartyInvite(ev) {
		senderServer = func(spec.RoomID, spec.SenderID) (*spec.UserID, error) { return nil, nil }
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, ib.Verifier, senderServer); err != nil {
		return rejectf("bad signature on event %s: %v", ev.EventID(), err)
	}
	return nil
}

// thirdPartyInvite reports whether ev is an m.room.member invite with a
// third_party_invite.signed block: the invited user's server may make such an invite for
// its sender and send it (spec server-server API, "Third-party invites"). "If the event is
// a 3rd party invite, the sender must already match the 3rd party invite, and the server
// which actually sends the event may be a different server" ("Validating hashes and
// signatures on received events"): the roomserver's auth rules hold every such event to
// the third-party invite's rule (the identity server's signature of the block with a key
// of the m.room.third_party_invite its sender sent), picked by the same test
// (eventcontent.ThirdPartySigned). An event whose content hash did not match was redacted when it was
// parsed, so the test sees only content its signatures cover.
func thirdPartyInvite(ev gomatrixserverlib.PDU) bool {
	return eventcontent.ThirdPartySigned(ev) != nil
}

// sentByOrigin reports whether origin may push ev to us: its sender is one of origin's
// users, or it is a third-party invite (thirdPartyInvite) of one of origin's users.
func sentByOrigin(ev gomatrixserverlib.PDU, origin spec.ServerName) bool {
	if sender, err := spec.NewUserID(string(ev.SenderID()), true); err == nil && sender.Domain() == origin {
		return true
	}
	if !thirdPartyInvite(ev) {
		return false
	}
	invitee, err := spec.NewUserID(*ev.StateKey(), true)
	return err == nil && invitee.Domain() == origin
}

// Receive writes a verified event to the roomserver, first fetching from origin what the
// roomserver lacks: missing prev events (bounded), else the state before the event.
func (ib *Inbound) Receive(ctx context.Context, origin spec.ServerName, v gomatrixserverlib.IRoomVersion, info *rsapi.QueryRoomInfoResponse, ev gomatrixserverlib.PDU) error {
	placed, err := ib.placed(ctx, ev.RoomID().String(), append([]string{ev.EventID()}, ev.PrevEventIDs()...))
	if err != nil {
		return err
	}
	return ib.receivePlaced(ctx, origin, v, info, ev, placed)
}

// receivePlaced is Receive for a caller that already looked up which of ev and its prev
// events the roomserver has (placed; it learns of the events this places). A gap before ev
// is filled as the spec's "Retrieving missing events" describes: the events between the
// room's forward extremities and ev come from origin's /get_missing_events (one round);
// for a prev event of those that is still unknown, the state before it comes from origin
// (/state_ids, or /state) and the roomserver resolves it with the states it knows. The
// event that was pushed to us is refused when its own prev events are still missing
// after that: its sender has them and did not give them, and taking its word for the state
// before it would let one event stand for the room's whole state (Synapse refuses such
// events for the same reason).
func (ib *Inbound) receivePlaced(ctx context.Context, origin spec.ServerName, v gomatrixserverlib.IRoomVersion, info *rsapi.QueryRoomInfoResponse,
	ev gomatrixserverlib.PDU, placed map[string]bool) error {
	roomID := ev.RoomID().String()
	if placed[ev.EventID()] {
		return nil
	}
	if hasGap(ev, placed, nil) {
		chain, err := ib.missingEvents(ctx, origin, v, info, ev, placed)
		if err != nil {
			return err
		}
		g := gapFiller{ib: ib, origin: origin, v: v, roomID: roomID, placed: placed, fetches: maxGapStates}
		g.receiveAll(ctx, chain)
		if hasGap(ev, placed, nil) {
			return rejectf("the prev events of %s are missing and %s did not send them", ev.EventID(), origin)
		}
	}
	return ib.input(ctx, roomID, v, rsapi.InputRoomEvent{Kind: rsapi.KindFederated, Event: &rsapi.Event{PDU: ev}})
}

// maxGapStates bounds the prev events whose state is fetched for one pushed event.
const maxGapStates = 5

// gapFiller places events fetched from origin (pulled) some of whose prev events the
// roomserver lacks.
type gapFiller struct {
	ib      *Inbound
	origin  spec.ServerName
	v       gomatrixserverlib.IRoomVersion
	roomID  string
	placed  map[string]bool
	fetches int
}

// receiveAll places pulled events, oldest first: a run of events that follow placed ones
// or each other goes to the roomserver as one message, an event with a gap alone
// (receive).
func (g *gapFiller) receiveAll(ctx context.Context, evs []gomatrixserverlib.PDU) {
	var run []gomatrixserverlib.PDU
	inRun := map[string]bool{}
	flush := func() {
		if len(run) == 0 {
			return
		}
		in := make([]rsapi.InputRoomEvent, len(run))
		for i, e := range run {
			in[i] = rsapi.InputRoomEvent{Kind: rsapi.KindFederated, Event: &rsapi.Event{PDU: e}}
		}
		res, err := g.ib.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: g.roomID, RoomVersion: string(g.v.Version()), Events: in}})
		if err != nil {
			g.ib.Logger.WithError(err).WithField("origin", g.origin).Debug("missing events could not be placed")
		} else {
			for i, r := range res.Results {
				if r.Err == nil || r.Err.Status == http.StatusForbidden {
					g.placed[run[i].EventID()] = true
				}
			}
		}
		run, inRun = nil, map[string]bool{}
	}
	for _, e := range evs {
		if !hasGap(e, g.placed, inRun) {
			run = append(run, e)
			inRun[e.EventID()] = true
			continue
		}
		flush()
		if err := g.receive(ctx, e); err != nil && !HandledByRejection(err) {
			g.ib.Logger.WithError(err).WithFields(logrus.Fields{"origin": g.origin, "event_id": e.EventID()}).Debug("a missing event could not be placed")
		}
	}
	flush()
}

// receive places ev with the state before each of its prev events that is not placed,
// fetched from origin; ev counts as placed afterwards when it was stored (accepted,
// soft-failed or rejected by the auth rules).
func (g *gapFiller) receive(ctx context.Context, ev gomatrixserverlib.PDU) error {
	prevStates := map[string][]string{}
	for _, id := range ev.PrevEventIDs() {
		if g.placed[id] {
			continue
		}
		if g.fetches == 0 {
			return rejectf("too many gaps before %s", ev.EventID())
		}
		g.fetches--
		ids, err := g.ib.storeStateBefore(ctx, g.origin, g.v, g.roomID, id)
		if err != nil {
			g.ib.Logger.WithError(err).WithFields(logrus.Fields{"origin": g.origin, "event_id": id}).Info("fetching the state before a missing event failed")
			return rejectf("could not fetch the state before %s from %s", id, g.origin)
		}
		prevStates[id] = ids
	}
	err := g.ib.input(ctx, g.roomID, g.v, rsapi.InputRoomEvent{Kind: rsapi.KindFederated, Event: &rsapi.Event{PDU: ev}, PrevStates: prevStates})
	if err == nil || HandledByRejection(err) {
		g.placed[ev.EventID()] = true
	}
	return err
}

// hasGap reports whether a prev event of ev is neither placed nor in also.
func hasGap(ev gomatrixserverlib.PDU, placed, also map[string]bool) bool {
	for _, id := range ev.PrevEventIDs() {
		if !placed[id] && !also[id] {
			return true
		}
	}
	return false
}

// placed looks up which of ids the roomserver has: true for timeline events (rejected ones
// included), false for outliers; unknown IDs are left out.
func (ib *Inbound) placed(ctx context.Context, roomID string, ids []string) (map[string]bool, error) {
	res, err := ib.Roomserver.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: ids})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range res.Events {
		out[e.EventID()] = !slices.Contains(res.OutlierIDs, e.EventID())
	}
	// A rejected event is part of the room's graph: an event after it has no gap there.
	for _, id := range res.RejectedIDs {
		out[id] = true
	}
	return out, nil
}

func (ib *Inbound) input(ctx context.Context, roomID string, v gomatrixserverlib.IRoomVersion, in ...rsapi.InputRoomEvent) error {
	res, err := ib.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, RoomVersion: string(v.Version()), Events: in}})
	if err != nil {
		return err
	}
	// The event the caller cares about is the last one; earlier ones (gap fillers) may be
	// rejected on their own without making it fail, and it then fails for its own reason.
	if last := res.Results[len(res.Results)-1]; last.Err != nil {
		return authRejection(last.Err)
	}
	return nil
}

// authRejection is a roomserver result's error, as a Rejected ByAuthRules when it is the
// auth rules' refusal (403).
func authRejection(err *matrixerr.Error) error {
	if err.Status == http.StatusForbidden {
		return &Rejected{Reason: err.Code + ": " + err.Message, ByAuthRules: true}
	}
	return err
}

// HandledByRejection reports whether err is the refusal of an event under the room's auth
// rules, which /send answers as handled (the spec's PDU processing result has no error
// for an event that was processed, whatever became of it).
func HandledByRejection(err error) bool {
	var rej *Rejected
	return errors.As(err, &rej) && rej.ByAuthRules
}

// inputAll writes events that must all be accepted (the state and auth chain before an
// event).
func (ib *Inbound) inputAll(ctx context.Context, roomID string, v gomatrixserverlib.IRoomVersion, in ...rsapi.InputRoomEvent) error {
	res, err := ib.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, RoomVersion: string(v.Version()), Events: in}})
	if err != nil {
		return err
	}
	for i, r := range res.Results {
		if r.Err != nil {
			return rejectf("state event %s rejected: %s", in[i].Event.EventID(), r.Err.Message)
		}
	}
	return nil
}

// missingEvents asks origin for the events between the room's forward extremities and ev
// (one round of /get_missing_events) and returns those that verify and that the roomserver
// has not placed, oldest first. It adds what the roomserver has of their prev events to
// placed. Nothing is an empty answer: the caller then fetches the state before ev's prev
// events instead.
func (ib *Inbound) missingEvents(ctx context.Context, origin spec.ServerName, v gomatrixserverlib.IRoomVersion, info *rsapi.QueryRoomInfoResponse,
	ev gomatrixserverlib.PDU, placed map[string]bool) ([]gomatrixserverlib.PDU, error) {
	if len(info.LatestEventIDs) == 0 {
		return nil, nil
	}
	res, err := ib.Client.LookupMissingEvents(ctx, ib.ServerName, origin, ev.RoomID().String(), fclient.MissingEvents{
		Limit: missingEventsLimit, MinDepth: int(max(info.Depth-missingEventsLimit, 0)), EarliestEvents: info.LatestEventIDs, LatestEvents: []string{ev.EventID()},
	}, v.Version())
	if err != nil {
		ib.Logger.WithError(err).WithField("origin", origin).Debug("get_missing_events failed")
		return nil, nil
	}
	have := map[string]bool{}
	var chain []gomatrixserverlib.PDU
	var ids []string
	for _, raw := range res.Events {
		e, err := ib.ParseVerified(ctx, v, raw)
		if err != nil || e.RoomID().String() != ev.RoomID().String() || have[e.EventID()] || e.EventID() == ev.EventID() {
			continue
		}
		have[e.EventID()] = true
		chain = append(chain, e)
		ids = append(append(ids, e.EventID()), e.PrevEventIDs()...)
	}
	if len(chain) == 0 {
		return nil, nil
	}
	known, err := ib.placed(ctx, ev.RoomID().String(), ids)
	if err != nil {
		return nil, err
	}
	fresh := chain[:0]
	for _, e := range chain {
		if !known[e.EventID()] {
			fresh = append(fresh, e)
		}
	}
	for id, p := range known {
		placed[id] = p
	}
	return gomatrixserverlib.ReverseTopologicalOrdering(fresh, gomatrixserverlib.TopologicalOrderByPrevEvents), nil
}

// storeStateBefore fetches from origin the state before eventID and stores as outliers
// what the roomserver lacks of it, of its auth chain and the event itself (the roomserver
// needs it to know the state after it). It returns the state's event IDs.
func (ib *Inbound) storeStateBefore(ctx context.Context, origin spec.ServerName, v gomatrixserverlib.IRoomVersion, roomID, eventID string) ([]string, error) {
	stateIDs, outliers, err := ib.stateBefore(ctx, origin, v, roomID, eventID)
	if err != nil {
		return nil, err
	}
	known, err := ib.placed(ctx, roomID, []string{eventID})
	if err != nil {
		return nil, err
	}
	if _, ok := known[eventID]; !ok && !slices.ContainsFunc(outliers, func(e gomatrixserverlib.PDU) bool { return e.EventID() == eventID }) {
		e, err := ib.fetchEvent(ctx, origin, v, roomID, eventID)
		if err != nil {
			return nil, err
		}
		outliers = OrderByAuth(append(outliers, e))
	}
	refused, err := ib.inputOutliers(ctx, roomID, v, outliers)
	if err != nil {
		return nil, err
	}
	kept := make([]string, 0, len(stateIDs))
	for _, id := range stateIDs {
		if !refused[id] {
			kept = append(kept, id)
		}
	}
	return kept, nil
}

// inputOutliers stores events as outliers, each on its own: one that fails the auth rules
// against its auth events (or whose auth events were refused) is left out of the state it
// was given in, as a server that sends a state with an unauthorised event in it must not
// get that event into the room. It returns the IDs of the events refused.
func (ib *Inbound) inputOutliers(ctx context.Context, roomID string, v gomatrixserverlib.IRoomVersion, outliers []gomatrixserverlib.PDU) (map[string]bool, error) {
	refused := map[string]bool{}
	if len(outliers) == 0 {
		return refused, nil
	}
	in := make([]rsapi.InputRoomEvent, len(outliers))
	for i, e := range outliers {
		in[i] = rsapi.InputRoomEvent{Kind: rsapi.KindOutlier, Event: &rsapi.Event{PDU: e}}
	}
	res, err := ib.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, RoomVersion: string(v.Version()), Events: in}})
	if err != nil {
		return nil, err
	}
	for i, r := range res.Results {
		if r.Err != nil {
			ib.Logger.WithFields(logrus.Fields{"event_id": outliers[i].EventID(), "error": r.Err.Message}).Debug("a fetched state or auth event was refused")
			refused[outliers[i].EventID()] = true
		}
	}
	return refused, nil
}

// errOtherRoom is fetchEvent's error for an event of another room than the one asked for.
var errOtherRoom = errors.New("event of another room")

// fetchEvent fetches one event of the room from origin with /event and checks it.
func (ib *Inbound) fetchEvent(ctx context.Context, origin spec.ServerName, v gomatrixserverlib.IRoomVersion, roomID, eventID string) (gomatrixserverlib.PDU, error) {
	txn, err := ib.Client.GetEvent(ctx, ib.ServerName, origin, eventID)
	if err != nil {
		return nil, err
	}
	if len(txn.PDUs) != 1 {
		return nil, fmt.Errorf("/event %s from %s answered %d events", eventID, origin, len(txn.PDUs))
	}
	e, err := ib.ParseVerified(ctx, v, txn.PDUs[0])
	if err != nil || e.EventID() != eventID {
		return nil, fmt.Errorf("event %s from %s is not the one asked for or is badly signed", eventID, origin)
	}
	if e.RoomID().String() != roomID {
		return nil, fmt.Errorf("%w: %s", errOtherRoom, eventID)
	}
	return e, nil
}

// stateBefore fetches from origin the state before eventID (/state_ids, then the events we
// lack with /event, or everything with /state when too many are missing). It returns the
// state's event IDs and the events to store first as outliers, auth events before the
// events they authorise. Events of other rooms are left out of both: an event that names
// one as an auth event is then rejected (or refused) by the roomserver on its own, and
// the rest of the state still counts.
func (ib *Inbound) stateBefore(ctx context.Context, origin spec.ServerName, v gomatrixserverlib.IRoomVersion, roomID, eventID string) ([]string, []gomatrixserverlib.PDU, error) {
	ids, err := ib.Client.LookupStateIDs(ctx, ib.ServerName, origin, roomID, eventID)
	if err != nil {
		return ib.fullState(ctx, origin, v, roomID, eventID)
	}
	all := append(append([]string(nil), ids.StateEventIDs...), ids.AuthEventIDs...)
	have, err := ib.placed(ctx, roomID, all)
	if err != nil {
		return nil, nil, err
	}
	var missing []string
	for _, id := range all {
		if _, known := have[id]; !known && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > maxEventFetches {
		return ib.fullState(ctx, origin, v, roomID, eventID)
	}
	var fetched []gomatrixserverlib.PDU
	otherRoom := map[string]bool{}
	for _, id := range missing {
		e, err := ib.fetchEvent(ctx, origin, v, roomID, id)
		if errors.Is(err, errOtherRoom) {
			otherRoom[id] = true
			continue
		}
		if err != nil {
			return ib.fullState(ctx, origin, v, roomID, eventID)
		}
		fetched = append(fetched, e)
	}
	stateIDs := make([]string, 0, len(ids.StateEventIDs))
	for _, id := range ids.StateEventIDs {
		if !otherRoom[id] {
			stateIDs = append(stateIDs, id)
		}
	}
	return stateIDs, gomatrixserverlib.ReverseTopologicalOrdering(fetched, gomatrixserverlib.TopologicalOrderByAuthEvents), nil
}

// fullState fetches the state before eventID and its auth chain with /state.
func (ib *Inbound) fullState(ctx context.Context, origin spec.ServerName, v gomatrixserverlib.IRoomVersion, roomID, eventID string) ([]string, []gomatrixserverlib.PDU, error) {
	res, err := ib.Client.LookupState(ctx, ib.ServerName, origin, roomID, eventID, v.Version())
	if err != nil {
		return nil, nil, err
	}
	state, err := ib.verifyAll(ctx, v, roomID, res.StateEvents)
	if err != nil {
		return nil, nil, err
	}
	auth, err := ib.verifyAll(ctx, v, roomID, res.AuthEvents)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]string, len(state))
	for i, e := range state {
		ids[i] = e.EventID()
	}
	return ids, OrderByAuth(append(auth, state...)), nil
}

// verifyAll parses and verifies events of a room; any bad one fails them all. Events of
// other rooms are left out (see stateBefore).
func (ib *Inbound) verifyAll(ctx context.Context, v gomatrixserverlib.IRoomVersion, roomID string, raws gomatrixserverlib.EventJSONs) ([]gomatrixserverlib.PDU, error) {
	out := make([]gomatrixserverlib.PDU, 0, len(raws))
	for _, raw := range raws {
		e, err := ib.ParseVerified(ctx, v, raw)
		if err != nil {
			return nil, err
		}
		if e.RoomID().String() == roomID {
			out = append(out, e)
		}
	}
	return out, nil
}

// OrderByAuth dedupes events and orders them so that every event comes after its auth
// events.
func OrderByAuth(evs []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	seen := map[string]bool{}
	var uniq []gomatrixserverlib.PDU
	for _, e := range evs {
		if !seen[e.EventID()] {
			seen[e.EventID()] = true
			uniq = append(uniq, e)
		}
	}
	return gomatrixserverlib.ReverseTopologicalOrdering(uniq, gomatrixserverlib.TopologicalOrderByAuthEvents)
}

// ResultError is the text of a PDU's failure in a /send response: a rejection's reason or
// a Matrix error's message, and a generic text for internal failures (whose detail the
// caller logs; it is never sent).
func ResultError(err error) (string, bool) {
	var merr *matrixerr.Error
	if errors.As(err, &merr) {
		return merr.Code + ": " + merr.Message, true
	}
	var rej *Rejected
	if errors.As(err, &rej) {
		return rej.Reason, true
	}
	return "internal error", false
}
