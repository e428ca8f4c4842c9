package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/guestaccess"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// Outcome is what became of one PDU of a transaction.
type Outcome struct {
	// EventID is empty when the PDU did not parse.
	EventID string
	Err     error
}

// checkedPDU is a PDU that parsed and whose signatures verified.
type checkedPDU struct {
	i    int
	ev   gomatrixserverlib.PDU
	v    gomatrixserverlib.IRoomVersion
	info *rsapi.QueryRoomInfoResponse
}

// ProcessPDUs handles the PDUs of one transaction from origin, in order, and returns an
// outcome per PDU. Events whose sender is not a user of origin (nor, for a third-party
// invite, whose invitee: sentByOrigin) are refused before any key is fetched. Round trips
// are few: each room's events are looked up with one query, and a run of events of a room whose prev_events are all in the timeline or earlier in the run
// goes to the roomserver as one message (one log write, one wait, one transaction; each event is still
// decided on its own). An event with a gap before it is received alone (Receive), after
// the run before it.
//
// A PDU that is not valid JSON for its room's version (room versions 6 and later: a float,
// or an integer outside the canonical JSON range) makes the whole transaction invalid: the
// error is matrixerr.BadJSON and no PDU of the transaction is applied.
func (ib *Inbound) ProcessPDUs(ctx context.Context, origin spec.ServerName, raws []json.RawMessage) ([]Outcome, error) {
	out := make([]Outcome, len(raws))
	var checked []checkedPDU
	rooms := map[string]*rsapi.QueryRoomInfoResponse{}
	versions := map[string]gomatrixserverlib.IRoomVersion{}
	// unknown and denied hold, per room of the transaction, why its PDUs are refused: the
	// room is unknown (before parsing: the room version is needed for that), or its server
	// ACL denies origin (after parsing, so that the error goes with the event ID).
	unknown, denied := map[string]error{}, map[string]error{}
	for i, raw := range raws {
		var header struct {
			RoomID string `json:"room_id"`
		}
		if err := json.Unmarshal(raw, &header); err != nil {
			out[i].Err = rejectf("PDU is not an event")
			continue
		}
		if err := unknown[header.RoomID]; err != nil {
			out[i].Err = err
			continue
		}
		v, info := versions[header.RoomID], rooms[header.RoomID]
		if v == nil {
			var err error
			if v, info, err = ib.RoomVersion(ctx, header.RoomID); err != nil {
				out[i].Err, unknown[header.RoomID] = err, err
				continue
			}
			versions[header.RoomID], rooms[header.RoomID] = v, info
			denied[header.RoomID] = RoomACL(ctx, ib.Roomserver, header.RoomID, origin)
		}
		ev, err := v.NewEventFromUntrustedJSON(raw)
		var badJSON gomatrixserverlib.BadJSONError
		if errors.As(err, &badJSON) {
			return nil, matrixerr.BadJSON(fmt.Sprintf("PDU %d is not valid JSON for room version %s", i, v.Version()))
		}
		if err != nil {
			out[i].Err = rejectf("invalid event: %v", err)
			continue
		}
		out[i].EventID = ev.EventID()
		if err = denied[header.RoomID]; err != nil {
			out[i].Err = err
			continue
		}
		if !sentByOrigin(ev, origin) {
			out[i].Err = rejectf("the event's sender is not a user of %s", origin)
			continue
		}
		if err = ib.verify(ctx, ev); err != nil {
			out[i].Err = err
			continue
		}
		checked = append(checked, checkedPDU{i: i, ev: ev, v: v, info: info})
	}

	// What each room has of these events and their prev_events, in one query per room.
	placed := map[string]map[string]bool{}
	for _, c := range checked {
		roomID := c.ev.RoomID().String()
		if placed[roomID] != nil {
			continue
		}
		var ids []string
		for _, d := range checked {
			if d.ev.RoomID().String() == roomID {
				ids = append(append(ids, d.ev.EventID()), d.ev.PrevEventIDs()...)
			}
		}
		p, err := ib.placed(ctx, roomID, ids)
		if err != nil {
			for _, d := range checked {
				if d.ev.RoomID().String() == roomID {
					out[d.i].Err = err
				}
			}
			p = map[string]bool{}
		}
		placed[roomID] = p
	}

	var run []checkedPDU
	inRun := map[string]bool{}
	flush := func() {
		if len(run) == 0 {
			return
		}
		in := make([]rsapi.InputRoomEvent, len(run))
		for j, c := range run {
			in[j] = rsapi.InputRoomEvent{Kind: rsapi.KindFederated, Event: &rsapi.Event{PDU: c.ev}}
		}
		roomID := run[0].ev.RoomID().String()
		res, err := ib.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, RoomVersion: string(run[0].v.Version()), Events: in}})
		for j, c := range run {
			switch {
			case err != nil:
				out[c.i].Err = err
			case res.Results[j].Err == nil:
			case res.Results[j].Err.Status == http.StatusNotFound:
				// A prev event of the run was refused: the event may still be placed with
				// the state before it from its origin.
				out[c.i].Err = ib.receivePlaced(ctx, origin, c.v, c.info, c.ev, placed[roomID])
			default:
				out[c.i].Err = authRejection(res.Results[j].Err)
			}
			if stored(out[c.i].Err) {
				placed[roomID][c.ev.EventID()] = true
			}
		}
		run, inRun = nil, map[string]bool{}
	}
	for _, c := range checked {
		if out[c.i].Err != nil {
			continue
		}
		roomID := c.ev.RoomID().String()
		if placed[roomID][c.ev.EventID()] || inRun[c.ev.EventID()] {
			continue // already in the timeline, or a repeat within the transaction
		}
		if len(run) > 0 && run[0].ev.RoomID().String() != roomID {
			flush()
		}
		joins := true
		for _, prev := range c.ev.PrevEventIDs() {
			joins = joins && (placed[roomID][prev] || inRun[prev])
		}
		if !joins {
			flush()
			if out[c.i].Err = ib.receivePlaced(ctx, origin, c.v, c.info, c.ev, placed[roomID]); stored(out[c.i].Err) {
				placed[roomID][c.ev.EventID()] = true
			}
			continue
		}
		run = append(run, c)
		inRun[c.ev.EventID()] = true
	}
	flush()
	ib.removeGuests(ctx, checked, out)
	return out, nil
}

// removeGuests makes this server's guests leave each room where an accepted event of the
// transaction changed m.room.guest_access, if the room's guest access no longer says
// can_join (spec "Guest Access": the server must remove its guests then). Each leave is the
// guest's own, which the auth rules always allow. The transaction's outcome does not
// depend on it: a failure is logged.
func (ib *Inbound) removeGuests(ctx context.Context, checked []checkedPDU, out []Outcome) {
	if ib.Accounts == nil {
		return
	}
	done := map[string]bool{}
	for _, c := range checked {
		roomID := c.ev.RoomID().String()
		if out[c.i].Err != nil || c.ev.Type() != guestaccess.EventType || !c.ev.StateKeyEquals("") || done[roomID] {
			continue
		}
		done[roomID] = true
		logger := ib.Logger.WithField("room_id", roomID)
		guests, err := guestaccess.GuestsToRemove(ctx, ib.Roomserver, ib.Accounts, ib.ServerName, roomID)
		if err != nil {
			logger.WithError(err).Warn("finding guests to remove after guest access was revoked failed")
			continue
		}
		for _, g := range guests {
			content, _ := json.Marshal(map[string]string{"membership": spec.Leave}) // a map of strings always encodes
			target := g
			in := rsapi.InputRoomEvent{Kind: rsapi.KindNew, Proto: &rsapi.ProtoEvent{Sender: g, Type: spec.MRoomMember, StateKey: &target, Content: content}}
			res, err := ib.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, Events: []rsapi.InputRoomEvent{in}}})
			if err == nil && res.Results[0].Err != nil {
				err = res.Results[0].Err
			}
			if err != nil {
				logger.WithError(err).WithField("user_id", g).Warn("removing a guest after guest access was revoked failed")
			}
		}
	}
}

// stored reports whether an event whose processing ended with err is in the room's graph
// now: accepted, soft-failed, or rejected by the auth rules (the roomserver keeps those
// whose prev events it has, and a run's prev events are placed).
func stored(err error) bool {
	return err == nil || HandledByRejection(err)
}
