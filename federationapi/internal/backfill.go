package internal

import (
	"context"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// maxBackfill is the most events asked for with one /backfill (what our own endpoint
// serves at most).
const maxBackfill = 100

// Backfiller fetches a room's history older than what this server has from the other
// servers in the room (api.SyncFederationAPI). It is a writer: what it fetches goes to the
// roomserver as input of kind backfilled, never straight to a reader.
type Backfiller struct {
	Inbound *Inbound
}

var _ api.SyncFederationAPI = (*Backfiller)(nil)

// PerformBackfill implements api.SyncFederationAPI. Servers are tried in order until one
// answers; a server that fails (unreachable, refusing, nothing usable) is logged and the
// next one tried.
func (b *Backfiller) PerformBackfill(ctx context.Context, req *api.PerformBackfillRequest) (*api.PerformBackfillResponse, error) {
	ib := b.Inbound
	v, _, err := ib.RoomVersion(ctx, req.RoomID)
	if errors.Is(err, ErrUnknownRoom) {
		return nil, matrixerr.NotFound("room unknown to this server")
	}
	if err != nil {
		return nil, err
	}
	limit := min(max(req.Limit, 1), maxBackfill)
	for _, s := range req.ServerNames {
		server := spec.ServerName(s)
		if server == ib.ServerName || server == "" {
			continue
		}
		log := ib.Logger.WithFields(logrus.Fields{"room_id": req.RoomID, "destination": server})
		evs, err := b.fetch(ctx, server, v, req.RoomID, req.EventIDs, limit)
		if err != nil {
			log.WithError(err).Info("backfill from a server failed")
			continue
		}
		ids, err := b.write(ctx, server, v, req.RoomID, evs)
		if err != nil {
			return nil, err
		}
		log.WithField("events", len(ids)).Debug("backfilled")
		return &api.PerformBackfillResponse{EventIDs: ids, Server: s}, nil
	}
	return &api.PerformBackfillResponse{}, nil
}

// fetch asks server for the events before eventIDs and returns those that verify and that
// the roomserver has not placed yet, oldest first (each after its prev_events). Events
// with bad signatures are dropped; a bad content hash redacts the event, as for /send.
func (b *Backfiller) fetch(ctx context.Context, server spec.ServerName, v gomatrixserverlib.IRoomVersion, roomID string, eventIDs []string, limit int) ([]gomatrixserverlib.PDU, error) {
	ib := b.Inbound
	txn, err := ib.Client.Backfill(ctx, ib.ServerName, server, roomID, limit, eventIDs)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var evs []gomatrixserverlib.PDU
	var ids []string
	for _, raw := range txn.PDUs {
		ev, err := ib.ParseVerified(ctx, v, raw)
		if err != nil {
			ib.Logger.WithError(err).WithField("origin", server).Info("dropping a backfilled event")
			continue
		}
		if ev.RoomID().String() != roomID || seen[ev.EventID()] {
			continue
		}
		seen[ev.EventID()] = true
		evs = append(evs, ev)
		ids = append(ids, ev.EventID())
	}
	if len(ids) == 0 {
		return nil, nil
	}
	placed, err := ib.placed(ctx, roomID, ids)
	if err != nil {
		return nil, err
	}
	fresh := evs[:0]
	for _, ev := range evs {
		if !placed[ev.EventID()] {
			fresh = append(fresh, ev)
		}
	}
	return gomatrixserverlib.ReverseTopologicalOrdering(fresh, gomatrixserverlib.TopologicalOrderByPrevEvents), nil
}

// write sends evs (oldest first) to the roomserver in one message of kind backfilled, after
// storing as outliers the state before each event whose prev_events are neither placed nor
// among evs (normally just the oldest one; none when the backfill reaches the create
// event). An event whose state cannot be had is left out. It returns the events placed.
func (b *Backfiller) write(ctx context.Context, server spec.ServerName, v gomatrixserverlib.IRoomVersion, roomID string, evs []gomatrixserverlib.PDU) ([]string, error) {
	ib := b.Inbound
	if len(evs) == 0 {
		return nil, nil
	}
	var prevs []string
	for _, ev := range evs {
		prevs = append(prevs, ev.PrevEventIDs()...)
	}
	have, err := ib.placed(ctx, roomID, prevs)
	if err != nil {
		return nil, err
	}
	in := make([]rsapi.InputRoomEvent, 0, len(evs))
	for _, ev := range evs {
		ie := rsapi.InputRoomEvent{Kind: rsapi.KindBackfilled, Event: &rsapi.Event{PDU: ev}}
		gap := false
		for _, id := range ev.PrevEventIDs() {
			gap = gap || !have[id]
		}
		if gap {
			stateIDs, outliers, err := ib.stateBefore(ctx, server, v, roomID, ev.EventID())
			if err == nil && len(outliers) > 0 {
				in := make([]rsapi.InputRoomEvent, len(outliers))
				for i, e := range outliers {
					in[i] = rsapi.InputRoomEvent{Kind: rsapi.KindOutlier, Event: &rsapi.Event{PDU: e}}
				}
				err = ib.inputAll(ctx, roomID, v, in...)
			}
			if err != nil {
				ib.Logger.WithError(err).WithFields(logrus.Fields{"origin": server, "event_id": ev.EventID()}).Info("no state before a backfilled event; left out")
				continue
			}
			ie.StateEventIDs = stateIDs
		}
		have[ev.EventID()] = true
		in = append(in, ie)
	}
	if len(in) == 0 {
		return nil, nil
	}
	res, err := ib.Roomserver.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, RoomVersion: string(v.Version()), Events: in}})
	if err != nil {
		return nil, err
	}
	var ids []string
	for i, r := range res.Results {
		if r.Err != nil {
			ib.Logger.WithFields(logrus.Fields{"origin": server, "event_id": in[i].Event.EventID(), "error": r.Err.Message}).Info("backfilled event rejected")
			continue
		}
		ids = append(ids, in[i].Event.EventID())
	}
	return ids, nil
}
