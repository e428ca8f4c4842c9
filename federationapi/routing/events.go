package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// maxWalk bounds the events /get_missing_events and /backfill return.
const maxWalk = 100

// canSee checks that origin may read the room at all: the room is world readable, or one
// of origin's users is joined to it. Which events it may then see is history visibility's
// question, answered per event by visibleJSON.
func (rt *Routing) canSee(ctx context.Context, origin spec.ServerName, roomID string) error {
	res, err := rt.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID})
	if err != nil {
		return err
	}
	if !res.RoomExists {
		return matrixerr.NotFound("unknown room")
	}
	if err := internal.CheckACL(res.StateEvents, origin); err != nil {
		return err
	}
	for _, ev := range res.StateEvents {
		switch ev.Type() {
		case spec.MRoomHistoryVisibility:
			if hv, err := ev.HistoryVisibility(); err == nil && hv == gomatrixserverlib.HistoryVisibilityWorldReadable {
				return nil
			}
		case spec.MRoomMember:
			if m, err := ev.Membership(); err == nil && m == spec.Join {
				if _, domain, err := gomatrixserverlib.SplitID('@', *ev.StateKey()); err == nil && domain == origin {
					return nil
				}
			}
		}
	}
	return matrixerr.Forbidden("no user of your server is in this room")
}

// visibleJSON returns the events as origin may see them: whole where history visibility
// lets one of its users see them and their sender's account was not erased, redacted
// elsewhere. Redacted copies keep the room's graph whole for the walks of /backfill and
// /get_missing_events while hiding content.
func (rt *Routing) visibleJSON(ctx context.Context, origin spec.ServerName, roomID string, evs []gomatrixserverlib.PDU) ([]json.RawMessage, error) {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID()
	}
	res, err := rt.Rooms.QueryServerAllowed(ctx, &rsapi.QueryServerAllowedRequest{RoomID: roomID, ServerName: origin, EventIDs: ids})
	if err != nil {
		return nil, err
	}
	allowed := make(map[string]bool, len(res.Allowed))
	for _, id := range res.Allowed {
		allowed[id] = true
	}
	return rt.eventJSONs(ctx, evs, func(e gomatrixserverlib.PDU) bool { return allowed[e.EventID()] })
}

// eventJSONs returns the events' JSON, whole where whole says so and their sender's account
// was not erased, redacted elsewhere. Other servers get an erased account's events
// redacted whoever of theirs was in the room when they were sent: a server cannot be told
// which of its users may see them (POST /account/deactivate's erase; the erasure itself is
// not sent over federation).
func (rt *Routing) eventJSONs(ctx context.Context, evs []gomatrixserverlib.PDU, whole func(gomatrixserverlib.PDU) bool) ([]json.RawMessage, error) {
	erased, err := rt.erasedSenders(ctx, evs)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		if whole(e) && !erased[string(e.SenderID())] {
			out[i] = e.JSON()
			continue
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(e.Version())
		if err != nil {
			return nil, err
		}
		if out[i], err = verImpl.RedactEventJSON(e.JSON()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// erasedSenders returns the senders of evs that are this server's users with erased
// accounts, asking the userapi only when some sender is local.
func (rt *Routing) erasedSenders(ctx context.Context, evs []gomatrixserverlib.PDU) (map[string]bool, error) {
	var local []string
	for _, e := range evs {
		sender := string(e.SenderID())
		if _, domain, err := gomatrixserverlib.SplitID('@', sender); err == nil && domain == rt.ServerName && !slices.Contains(local, sender) {
			local = append(local, sender)
		}
	}
	if len(local) == 0 {
		return nil, nil
	}
	res, err := rt.Users.QueryErasedUsers(ctx, &uapi.QueryErasedUsersRequest{UserIDs: local})
	if err != nil {
		return nil, fmt.Errorf("query erased users: %w", err)
	}
	erased := make(map[string]bool, len(res.Erased))
	for _, id := range res.Erased {
		erased[id] = true
	}
	return erased, nil
}

// GetEvent is GET /_matrix/federation/v1/event/{eventID}.
func (rt *Routing) GetEvent(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	ctx := r.Context()
	id := httputil.Vars(r)["eventID"]
	res, err := rt.Rooms.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{EventIDs: []string{id}})
	if err != nil {
		return httputil.Response{}, err
	}
	if len(res.Events) == 0 {
		return httputil.Response{}, matrixerr.NotFound("unknown event")
	}
	ev := res.Events[0]
	roomID := ev.RoomID().String()
	if err = rt.canSee(ctx, req.Origin(), roomID); err != nil {
		return httputil.Response{}, err
	}
	pdus, err := rt.visibleJSON(ctx, req.Origin(), roomID, []gomatrixserverlib.PDU{ev.PDU})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(rt.txn(pdus)), nil
}

func (rt *Routing) txn(pdus []json.RawMessage) gomatrixserverlib.Transaction {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	return gomatrixserverlib.Transaction{Origin: rt.ServerName, OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus}
}

// stateAt returns the state before an event and the auth chain of that state.
func (rt *Routing) stateAt(r *http.Request, req *fclient.FederationRequest) ([]rsapi.Event, []gomatrixserverlib.PDU, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomID"]
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, nil, matrixerr.MissingParam("event_id is required")
	}
	if err := rt.canSee(ctx, req.Origin(), roomID); err != nil {
		return nil, nil, err
	}
	res, err := rt.Rooms.QueryStateAtEvent(ctx, &rsapi.QueryStateAtEventRequest{RoomID: roomID, EventID: eventID})
	if err != nil {
		return nil, nil, err
	}
	if !res.EventKnown {
		return nil, nil, matrixerr.NotFound("unknown event")
	}
	pdus := make([]gomatrixserverlib.PDU, len(res.StateEvents))
	for i, e := range res.StateEvents {
		pdus[i] = e.PDU
	}
	chain, err := AuthChain(ctx, rt.Rooms, roomID, pdus)
	return res.StateEvents, chain, err
}

// StateIDs is GET /_matrix/federation/v1/state_ids/{roomID}?event_id=...: the state before
// the event and its auth chain, as IDs.
func (rt *Routing) StateIDs(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	state, chain, err := rt.stateAt(r, req)
	if err != nil {
		return httputil.Response{}, err
	}
	out := fclient.RespStateIDs{StateEventIDs: []string{}, AuthEventIDs: []string{}}
	for _, e := range state {
		out.StateEventIDs = append(out.StateEventIDs, e.EventID())
	}
	for _, e := range chain {
		out.AuthEventIDs = append(out.AuthEventIDs, e.EventID())
	}
	return httputil.OK(out), nil
}

// State is GET /_matrix/federation/v1/state/{roomID}?event_id=...: the state before the
// event and its auth chain.
func (rt *Routing) State(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	state, chain, err := rt.stateAt(r, req)
	if err != nil {
		return httputil.Response{}, err
	}
	pdus := make([]gomatrixserverlib.PDU, len(state))
	for i, e := range state {
		pdus[i] = e.PDU
	}
	whole := func(gomatrixserverlib.PDU) bool { return true }
	stateJSON, err := rt.eventJSONs(r.Context(), pdus, whole)
	if err != nil {
		return httputil.Response{}, err
	}
	chainJSON, err := rt.eventJSONs(r.Context(), chain, whole)
	if err != nil {
		return httputil.Response{}, err
	}
	out := fclient.RespState{StateEvents: gomatrixserverlib.EventJSONs{}, AuthEvents: gomatrixserverlib.EventJSONs{}}
	for _, e := range stateJSON {
		out.StateEvents = append(out.StateEvents, spec.RawJSON(e))
	}
	for _, e := range chainJSON {
		out.AuthEvents = append(out.AuthEvents, spec.RawJSON(e))
	}
	return httputil.OK(out), nil
}

// AuthChain returns every event reachable through auth_events from evs.
func AuthChain(ctx context.Context, rooms rsapi.QueryAPI, roomID string, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	var next []string
	for _, e := range evs {
		next = append(next, e.AuthEventIDs()...)
	}
	return walk(ctx, rooms, roomID, next, map[string]bool{}, gomatrixserverlib.PDU.AuthEventIDs, func(gomatrixserverlib.PDU) bool { return true }, 0)
}

// walkBack collects events before from (following prev_events), newest first, stopping at
// stop, below minDepth and at limit.
func (rt *Routing) walkBack(ctx context.Context, roomID string, from []string, stop map[string]bool, minDepth int64, limit int, includeFrom bool) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	for id := range stop {
		seen[id] = true
	}
	next := from
	if !includeFrom {
		res, err := rt.Rooms.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: from})
		if err != nil {
			return nil, err
		}
		next = nil
		for _, e := range res.Events {
			seen[e.EventID()] = true
			next = append(next, e.PrevEventIDs()...)
		}
	}
	return walk(ctx, rt.Rooms, roomID, next, seen, gomatrixserverlib.PDU.PrevEventIDs,
		func(e gomatrixserverlib.PDU) bool { return e.Depth() >= minDepth }, limit)
}

// walk follows edges (auth or prev events) breadth first from the IDs in next, fetching
// each round of events not yet seen in one query. It keeps the events keep accepts and
// follows only their edges, and stops at limit kept events (0: no limit).
func walk(ctx context.Context, rooms rsapi.QueryAPI, roomID string, next []string, seen map[string]bool,
	edges func(gomatrixserverlib.PDU) []string, keep func(gomatrixserverlib.PDU) bool, limit int) ([]gomatrixserverlib.PDU, error) {
	var out []gomatrixserverlib.PDU
	full := func() bool { return limit > 0 && len(out) >= limit }
	for len(next) > 0 && !full() {
		var ids []string
		for _, id := range next {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		next = nil
		if len(ids) == 0 {
			break
		}
		res, err := rooms.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: ids})
		if err != nil {
			return nil, err
		}
		for _, e := range res.Events {
			if full() || !keep(e.PDU) {
				continue
			}
			out = append(out, e.PDU)
			next = append(next, edges(e.PDU)...)
		}
	}
	return out, nil
}

// GetMissingEvents is POST /_matrix/federation/v1/get_missing_events/{roomID}: events
// before latest_events and after earliest_events, oldest first.
func (rt *Routing) GetMissingEvents(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomID"]
	var body fclient.MissingEvents
	if err := json.Unmarshal(req.Content(), &body); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("the request is not valid JSON")
	}
	if err := rt.canSee(ctx, req.Origin(), roomID); err != nil {
		return httputil.Response{}, err
	}
	limit := body.Limit
	if limit <= 0 || limit > maxWalk {
		limit = min(max(limit, 10), maxWalk)
	}
	stop := map[string]bool{}
	for _, id := range body.EarliestEvents {
		stop[id] = true
	}
	evs, err := rt.walkBack(ctx, roomID, body.LatestEvents, stop, int64(body.MinDepth), limit, false)
	if err != nil {
		return httputil.Response{}, err
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
	pdus, err := rt.visibleJSON(ctx, req.Origin(), roomID, evs)
	if err != nil {
		return httputil.Response{}, err
	}
	out := fclient.RespMissingEvents{Events: gomatrixserverlib.EventJSONs{}}
	for _, e := range pdus {
		out.Events = append(out.Events, spec.RawJSON(e))
	}
	return httputil.OK(out), nil
}

// Backfill is GET /_matrix/federation/v1/backfill/{roomID}?v=...&limit=...: the events
// named and those before them, newest first.
func (rt *Routing) Backfill(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomID"]
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return httputil.Response{}, matrixerr.MissingParam("v is required")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("limit must be an integer")
	}
	limit = min(max(limit, 1), maxWalk)
	if err = rt.canSee(ctx, req.Origin(), roomID); err != nil {
		return httputil.Response{}, err
	}
	evs, err := rt.walkBack(ctx, roomID, from, nil, 0, limit, true)
	if err != nil {
		return httputil.Response{}, err
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() > evs[j].Depth() })
	pdus, err := rt.visibleJSON(ctx, req.Origin(), roomID, evs)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(rt.txn(pdus)), nil
}

// EventAuth is GET /_matrix/federation/v1/event_auth/{roomID}/{eventID}: the auth chain of
// an event of a room the requesting server may read.
func (rt *Routing) EventAuth(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, eventID := vars["roomID"], vars["eventID"]
	if err := rt.canSee(ctx, req.Origin(), roomID); err != nil {
		return httputil.Response{}, err
	}
	res, err := rt.Rooms.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{eventID}})
	if err != nil {
		return httputil.Response{}, err
	}
	if len(res.Events) == 0 {
		return httputil.Response{}, matrixerr.NotFound("unknown event")
	}
	chain, err := AuthChain(ctx, rt.Rooms, roomID, []gomatrixserverlib.PDU{res.Events[0].PDU})
	if err != nil {
		return httputil.Response{}, err
	}
	out := fclient.RespEventAuth{AuthEvents: gomatrixserverlib.EventJSONs{}}
	for _, e := range chain {
		out.AuthEvents = append(out.AuthEvents, e.JSON())
	}
	return httputil.OK(out), nil
}
