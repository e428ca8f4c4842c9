// Package routing is the search reader's client endpoint: POST /search. It parses and
// checks the request (every client mistake is a 400 with the spec's code) and hands it to
// internal.Searcher.
package routing

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/searchapi/internal"
	"github.com/matrix-org/dendrite/searchapi/storage"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Limits on what a client may ask for (docs/limits.md).
const (
	DefaultLimit   = 10
	MaxLimit       = 100
	DefaultContext = 5
	MaxContext     = 50
	// MaxWords bounds the words of a search term that are searched for.
	MaxWords = 32
)

// Handlers serves POST /search.
type Handlers struct {
	Searcher     *internal.Searcher
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
	// CatchUp waits, bounded, until the index holds everything in the log when the request
	// arrived (read-your-writes for a message just sent); nil to answer at once.
	CatchUp func(ctx context.Context) error
	// QueryTime observes each search's duration by order.
	QueryTime *prometheus.HistogramVec
}

// Routes lists the endpoint with its absolute paths.
func (h *Handlers) Routes() []httputil.Route {
	handler := httputil.Authenticated(h.DeviceLookup, h.Search)
	var out []httputil.Route
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		out = append(out, httputil.Route{Name: "search", Method: http.MethodPost, Path: prefix + "/search", Handler: handler})
	}
	return out
}

// body is the request: the categories by name, each decoded once its name is checked.
type body struct {
	SearchCategories map[string]json.RawMessage `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   *string  `json:"search_term"`
	Keys         []string `json:"keys"`
	Filter       *filter  `json:"filter"`
	OrderBy      *string  `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

type filter struct {
	Limit      *int     `json:"limit"`
	Rooms      []string `json:"rooms"`
	NotRooms   []string `json:"not_rooms"`
	Senders    []string `json:"senders"`
	NotSenders []string `json:"not_senders"`
	Types      []string `json:"types"`
}

type response struct {
	SearchCategories categories `json:"search_categories"`
}

type categories struct {
	RoomEvents *internal.RoomEvents `json:"room_events,omitempty"`
}

// Search is POST /search.
func (h *Handlers) Search(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var raw json.RawMessage
	if err := httputil.DecodeJSON(r, &raw); err != nil {
		return httputil.Response{}, err
	}
	var b body
	if json.Unmarshal(raw, &b) != nil || b.SearchCategories == nil {
		return httputil.Response{}, matrixerr.BadJSON("search_categories must be an object")
	}
	for name := range b.SearchCategories {
		if name != "room_events" {
			return httputil.Response{}, matrixerr.InvalidParam("unknown search category " + name)
		}
	}
	roomEvents, ok := b.SearchCategories["room_events"]
	if !ok {
		return httputil.OK(response{}), nil
	}
	var c roomEventsCriteria
	if json.Unmarshal(roomEvents, &c) != nil {
		return httputil.Response{}, matrixerr.BadJSON("search_categories.room_events does not have the shape the spec gives it")
	}
	req, err := parse(&c, r.URL.Query().Get("next_batch"))
	if err != nil {
		return httputil.Response{}, err
	}
	req.UserID = dev.UserID
	if h.CatchUp != nil {
		if err := h.CatchUp(r.Context()); err != nil {
			httputil.Logger(r).WithError(err).Debug("searching an index behind the log")
		}
	}
	start := time.Now()
	res, err := h.Searcher.Search(r.Context(), req)
	if err != nil {
		return httputil.Response{}, err
	}
	if h.QueryTime != nil {
		h.QueryTime.WithLabelValues(req.Order).Observe(time.Since(start).Seconds())
	}
	return httputil.OK(response{SearchCategories: categories{RoomEvents: res}}), nil
}

// parse checks the room_events criteria and the next_batch token.
func parse(c *roomEventsCriteria, nextBatch string) (*internal.Request, error) {
	if c.SearchTerm == nil {
		return nil, matrixerr.BadJSON("search_categories.room_events.search_term is required")
	}
	if *c.SearchTerm == "" {
		return nil, matrixerr.InvalidParam("search_term must not be empty")
	}
	req := &internal.Request{Words: storage.Tokenize(*c.SearchTerm, MaxWords), Order: storage.OrderRank, Limit: DefaultLimit}
	for _, k := range c.Keys {
		if k != storage.KeyBody && k != storage.KeyName && k != storage.KeyTopic {
			return nil, matrixerr.InvalidParam("keys may hold content.body, content.name and content.topic")
		}
	}
	req.Keys = c.Keys
	if c.OrderBy != nil {
		if *c.OrderBy != storage.OrderRank && *c.OrderBy != storage.OrderRecent {
			return nil, matrixerr.InvalidParam("order_by must be rank or recent")
		}
		req.Order = *c.OrderBy
	}
	if f := c.Filter; f != nil {
		if f.Limit != nil {
			if *f.Limit < 0 {
				return nil, matrixerr.InvalidParam("filter.limit must not be negative")
			}
			if *f.Limit > 0 {
				req.Limit = min(*f.Limit, MaxLimit)
			}
		}
		req.Rooms, req.NotRooms, req.Senders, req.NotSenders, req.Types = f.Rooms, f.NotRooms, f.Senders, f.NotSenders, f.Types
	}
	if ec := c.EventContext; ec != nil {
		ctx := &internal.ContextRequest{Before: DefaultContext, After: DefaultContext, IncludeProfile: ec.IncludeProfile}
		for _, l := range []struct {
			v   *int
			dst *int
		}{{ec.BeforeLimit, &ctx.Before}, {ec.AfterLimit, &ctx.After}} {
			if l.v == nil {
				continue
			}
			if *l.v < 0 {
				return nil, matrixerr.InvalidParam("event_context limits must not be negative")
			}
			*l.dst = min(*l.v, MaxContext)
		}
		req.Context = ctx
	}
	req.IncludeState = c.IncludeState
	if g := c.Groupings; g != nil {
		for _, k := range g.GroupBy {
			if k.Key != internal.GroupRoomID && k.Key != internal.GroupSender {
				return nil, matrixerr.InvalidParam("groupings.group_by keys are room_id or sender")
			}
			if !slices.Contains(req.GroupBy, k.Key) {
				req.GroupBy = append(req.GroupBy, k.Key)
			}
		}
	}
	if nextBatch != "" {
		after, err := internal.DecodeCursor(req.Order, nextBatch)
		if err != nil {
			return nil, err
		}
		req.After = after
	}
	return req, nil
}
