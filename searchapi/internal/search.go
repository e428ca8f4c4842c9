// Package internal is the search reader's logic: a search over the index, limited to what
// the user may see (history visibility judged by the roomserver, one call per room and
// page), with context, profiles, state and groups around the results.
package internal

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/searchapi/storage"
)

// Group keys of groupings.group_by.
const (
	GroupRoomID = "room_id"
	GroupSender = "sender"
)

// maxScans bounds the index pages one search reads while history visibility hides
// results: a search that finds nothing visible in them returns what it has with a
// next_batch after the last match it judged.
const maxScans = 8

// Request is one room_events search.
type Request struct {
	UserID string
	// Words are the search term's words (storage.Tokenize).
	Words []string
	Keys  []string
	// Rooms and NotRooms narrow the user's rooms when set.
	Rooms      []string
	NotRooms   []string
	Senders    []string
	NotSenders []string
	Types      []string
	Order      string
	After      *storage.Cursor
	Limit      int
	// Context asks for events around each result; nil for none.
	Context      *ContextRequest
	IncludeState bool
	GroupBy      []string
}

// ContextRequest is event_context.
type ContextRequest struct {
	Before, After  int
	IncludeProfile bool
}

// RoomEvents is the room_events category of the answer.
type RoomEvents struct {
	Count      int                               `json:"count"`
	Highlights []string                          `json:"highlights"`
	Results    []Result                          `json:"results"`
	State      map[string][]clientevent.Event    `json:"state,omitempty"`
	Groups     map[string]map[string]*GroupValue `json:"groups,omitempty"`
	NextBatch  string                            `json:"next_batch,omitempty"`
}

// Result is one search result.
type Result struct {
	Rank    float64           `json:"rank"`
	Result  clientevent.Event `json:"result"`
	Context *EventContext     `json:"context,omitempty"`
}

// EventContext is what surrounds a result.
type EventContext struct {
	ProfileInfo  map[string]Profile  `json:"profile_info,omitempty"`
	EventsBefore []clientevent.Event `json:"events_before"`
	EventsAfter  []clientevent.Event `json:"events_after"`
}

// Profile is a sender's display name and avatar at the result.
type Profile struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// GroupValue lists the results of one room or sender.
type GroupValue struct {
	NextBatch string   `json:"next_batch,omitempty"`
	Order     int      `json:"order"`
	Results   []string `json:"results"`
}

// Searcher answers searches.
type Searcher struct {
	DB    storage.Database
	Rooms rsapi.SearchRoomserverAPI
}

// Search runs req.
func (s *Searcher) Search(ctx context.Context, req *Request) (*RoomEvents, error) {
	out := &RoomEvents{Highlights: slices.Concat([]string{}, req.Words), Results: []Result{}}
	if len(req.Words) == 0 {
		// A term of punctuation and operators only has no word to look for.
		return out, nil
	}
	rooms, err := s.rooms(ctx, req)
	if err != nil || len(rooms) == 0 {
		return out, err
	}
	q := storage.Query{Words: req.Words, Rooms: rooms, Keys: req.Keys, Senders: req.Senders, NotSenders: req.NotSenders,
		Types: req.Types, Order: req.Order}
	if out.Count, err = s.DB.Count(ctx, &q); err != nil {
		return nil, err
	}
	page, next, err := s.visiblePage(ctx, req, q)
	if err != nil {
		return nil, err
	}
	if next != nil {
		out.NextBatch = EncodeCursor(req.Order, next)
	}
	if err = s.fill(ctx, req, page, out); err != nil {
		return nil, err
	}
	return out, nil
}

// rooms are where the user searches: the rooms the user is joined to or left (or was
// banned from), narrowed by the filter.
func (s *Searcher) rooms(ctx context.Context, req *Request) ([]string, error) {
	var rooms []string
	for _, m := range []string{spec.Join, spec.Leave, spec.Ban} {
		res, err := s.Rooms.QueryRoomsForUser(ctx, &rsapi.QueryRoomsForUserRequest{UserID: req.UserID, Membership: m})
		if err != nil {
			return nil, fmt.Errorf("rooms of the searching user: %w", err)
		}
		for _, r := range res.RoomIDs {
			if (len(req.Rooms) == 0 || slices.Contains(req.Rooms, r)) && !slices.Contains(req.NotRooms, r) && !slices.Contains(rooms, r) {
				rooms = append(rooms, r)
			}
		}
	}
	slices.Sort(rooms)
	return rooms, nil
}

// visiblePage reads the index until it has req.Limit results the user may see, or the
// matches end, or maxScans pages were judged. next is where the following page starts
// (nil when no match is left).
func (s *Searcher) visiblePage(ctx context.Context, req *Request, q storage.Query) ([]storage.Result, *storage.Cursor, error) {
	q.After, q.Limit = req.After, max(2*req.Limit, 20)
	var page []storage.Result
	for range maxScans {
		cands, err := s.DB.Search(ctx, &q)
		if err != nil {
			return nil, nil, err
		}
		allowed, err := s.allowed(ctx, req.UserID, cands)
		if err != nil {
			return nil, nil, err
		}
		for _, c := range cands {
			if !allowed[c.EventID] {
				continue
			}
			if len(page) == req.Limit {
				return page, &page[len(page)-1].Cursor, nil
			}
			page = append(page, c)
		}
		if len(cands) < q.Limit {
			return page, nil, nil
		}
		q.After = &cands[len(cands)-1].Cursor
	}
	return page, q.After, nil
}

// allowed asks the roomserver which of rs the user may see, one call per room.
func (s *Searcher) allowed(ctx context.Context, userID string, rs []storage.Result) (map[string]bool, error) {
	byRoom := map[string][]string{}
	for _, r := range rs {
		byRoom[r.RoomID] = append(byRoom[r.RoomID], r.EventID)
	}
	return s.allowedIDs(ctx, userID, byRoom)
}

func (s *Searcher) allowedIDs(ctx context.Context, userID string, byRoom map[string][]string) (map[string]bool, error) {
	out := map[string]bool{}
	for room, ids := range byRoom {
		res, err := s.Rooms.QueryUserAllowed(ctx, &rsapi.QueryUserAllowedRequest{RoomID: room, UserID: userID, EventIDs: ids})
		if err != nil {
			return nil, fmt.Errorf("history visibility in %s: %w", room, err)
		}
		for _, id := range res.Allowed {
			out[id] = true
		}
	}
	return out, nil
}

// fill turns the page into results with their events, context, state and groups.
func (s *Searcher) fill(ctx context.Context, req *Request, page []storage.Result, out *RoomEvents) error {
	type around struct{ before, after []string }
	contexts := make([]around, len(page))
	want := map[string][]string{}
	var contextIDs map[string][]string
	for i, r := range page {
		want[r.RoomID] = append(want[r.RoomID], r.EventID)
		if req.Context == nil {
			continue
		}
		before, after, err := s.DB.Around(ctx, r.RoomID, r.RoomPos, req.Context.Before, req.Context.After)
		if err != nil {
			return err
		}
		contexts[i] = around{before, after}
		if contextIDs == nil {
			contextIDs = map[string][]string{}
		}
		contextIDs[r.RoomID] = append(append(contextIDs[r.RoomID], before...), after...)
	}
	visible, err := s.allowedIDs(ctx, req.UserID, contextIDs)
	if err != nil {
		return err
	}
	for room, ids := range contextIDs {
		for _, id := range ids {
			if visible[id] {
				want[room] = append(want[room], id)
			}
		}
	}
	events, err := s.events(ctx, want)
	if err != nil {
		return err
	}
	for i, r := range page {
		ev, ok := events[r.EventID]
		if !ok {
			continue
		}
		res := Result{Rank: r.Rank, Result: ev}
		if req.Context != nil {
			c := &EventContext{EventsBefore: pick(events, contexts[i].before), EventsAfter: pick(events, contexts[i].after)}
			if req.Context.IncludeProfile {
				if c.ProfileInfo, err = s.profiles(ctx, r, c); err != nil {
					return err
				}
			}
			res.Context = c
		}
		out.Results = append(out.Results, res)
	}
	if req.IncludeState {
		if out.State, err = s.state(ctx, out.Results); err != nil {
			return err
		}
	}
	out.Groups = groups(req.GroupBy, out.Results, out.NextBatch)
	return nil
}

// events fetches events from the roomserver, one call per room, in the client format.
func (s *Searcher) events(ctx context.Context, byRoom map[string][]string) (map[string]clientevent.Event, error) {
	out := map[string]clientevent.Event{}
	for room, ids := range byRoom {
		res, err := s.Rooms.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: room, EventIDs: ids})
		if err != nil {
			return nil, fmt.Errorf("events of %s: %w", room, err)
		}
		for _, e := range res.Events {
			ce, err := clientevent.FromPDU(e.PDU)
			if err != nil {
				return nil, err
			}
			out[e.EventID()] = ce
		}
	}
	return out, nil
}

func pick(events map[string]clientevent.Event, ids []string) []clientevent.Event {
	out := []clientevent.Event{}
	for _, id := range ids {
		if ev, ok := events[id]; ok {
			out = append(out, ev)
		}
	}
	return out
}

// profiles are the display names and avatars of the senders of a result and its context,
// by the room state at the result.
func (s *Searcher) profiles(ctx context.Context, r storage.Result, c *EventContext) (map[string]Profile, error) {
	var tuples []rsapi.StateKeyTuple
	for _, ev := range slices.Concat([]clientevent.Event{{Sender: r.Sender}}, c.EventsBefore, c.EventsAfter) {
		t := rsapi.StateKeyTuple{EventType: spec.MRoomMember, StateKey: ev.Sender}
		if !slices.Contains(tuples, t) {
			tuples = append(tuples, t)
		}
	}
	res, err := s.Rooms.QueryStateAtEvent(ctx, &rsapi.QueryStateAtEventRequest{RoomID: r.RoomID, EventID: r.EventID, Tuples: tuples})
	if err != nil {
		return nil, fmt.Errorf("profiles at %s: %w", r.EventID, err)
	}
	out := map[string]Profile{}
	for _, e := range res.StateEvents {
		var p Profile
		if json.Unmarshal(e.Content(), &p) == nil && e.StateKey() != nil {
			out[*e.StateKey()] = p
		}
	}
	return out, nil
}

// state is the current state of each room with results.
func (s *Searcher) state(ctx context.Context, results []Result) (map[string][]clientevent.Event, error) {
	out := map[string][]clientevent.Event{}
	for _, r := range results {
		if _, done := out[r.Result.RoomID]; done {
			continue
		}
		res, err := s.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: r.Result.RoomID})
		if err != nil {
			return nil, fmt.Errorf("state of %s: %w", r.Result.RoomID, err)
		}
		evs := make([]clientevent.Event, 0, len(res.StateEvents))
		for _, e := range res.StateEvents {
			ce, err := clientevent.FromPDU(e.PDU)
			if err != nil {
				return nil, err
			}
			evs = append(evs, ce)
		}
		out[r.Result.RoomID] = evs
	}
	return out, nil
}

// groups partitions the results by each requested key, groups ordered by their first
// result. A group's next_batch is the search's: the next page may hold more of it.
func groups(by []string, results []Result, next string) map[string]map[string]*GroupValue {
	if len(by) == 0 {
		return nil
	}
	out := map[string]map[string]*GroupValue{}
	for _, key := range by {
		g := map[string]*GroupValue{}
		for _, r := range results {
			v := r.Result.RoomID
			if key == GroupSender {
				v = r.Result.Sender
			}
			if g[v] == nil {
				g[v] = &GroupValue{Order: len(g) + 1, Results: []string{}, NextBatch: next}
			}
			g[v].Results = append(g[v].Results, r.Result.EventID)
		}
		out[key] = g
	}
	return out
}

// EncodeCursor is a next_batch token: the order, then the last result's rank (its IEEE
// bits, so it comes back exactly) or timestamp, then its index ID. It is URL-safe.
func EncodeCursor(order string, c *storage.Cursor) string {
	if order == storage.OrderRecent {
		return "t." + strconv.FormatInt(c.TS, 10) + "." + strconv.FormatInt(c.ID, 10)
	}
	return "r." + strconv.FormatUint(math.Float64bits(c.Rank), 16) + "." + strconv.FormatInt(c.ID, 10)
}

// DecodeCursor parses a next_batch token made by EncodeCursor for the same order.
func DecodeCursor(order, token string) (*storage.Cursor, error) {
	bad := matrixerr.InvalidParam("next_batch is not a token this server gave for this order")
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, bad
	}
	id, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return nil, bad
	}
	c := &storage.Cursor{ID: id}
	switch {
	case order == storage.OrderRecent && parts[0] == "t":
		if c.TS, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
			return nil, bad
		}
	case order == storage.OrderRank && parts[0] == "r":
		bits, err := strconv.ParseUint(parts[1], 16, 64)
		if err != nil || math.IsNaN(math.Float64frombits(bits)) || math.IsInf(math.Float64frombits(bits), 0) {
			return nil, bad
		}
		c.Rank = math.Float64frombits(bits)
	default:
		return nil, bad
	}
	return c, nil
}
