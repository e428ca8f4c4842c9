// Package routing is the sync API's client-server endpoints: GET /sync,
// /rooms/{roomId}/messages, /rooms/{roomId}/context/{eventId}, POST /user_directory/search
// and the deprecated /events, under both the v3 and r0 prefixes; the v1 endpoints
// /rooms/{roomId}/relations/... and /rooms/{roomId}/threads; and simplified sliding sync
// (MSC4186) at its unstable path. Handlers only parse and validate parameters; the logic is in syncapi/internal.
package routing

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/syncapi/internal"
	"github.com/matrix-org/dendrite/syncapi/types"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// MaxSyncTimeout caps a long-poll's wait.
const MaxSyncTimeout = 5 * time.Minute

// Limits of /messages and /context.
const (
	defaultMessagesLimit = 10
	maxMessagesLimit     = 1000
	defaultContextLimit  = 10
	maxContextLimit      = 100
)

// Handlers serves the endpoints.
type Handlers struct {
	Syncer       *internal.Syncer
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
	FilterLookup func(ctx context.Context, localpart, filterID string) ([]byte, error)
	// CatchUp waits until the consumers have applied everything in the log when the request
	// arrived (read-your-writes; see consumer.Progress).
	CatchUp func(ctx context.Context, maxWait time.Duration) error
	// Presence, when set, hears of syncing users (set_presence).
	Presence *internal.SyncPresence
	// ResolveAlias is the room a local alias points at, "" when none.
	ResolveAlias func(ctx context.Context, alias string) (string, error)
}

// catchUpWait bounds the read-your-writes wait: past it the request is answered from what
// is applied, which is still consistent, only older.
const catchUpWait = 5 * time.Second

// authenticated wraps a handler with the token check and the read-your-writes wait.
func (h *Handlers) authenticated(fn func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
	return httputil.Authenticated(h.DeviceLookup, func(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
		if err := h.CatchUp(r.Context(), catchUpWait); err != nil {
			httputil.Logger(r).WithError(err).Warn("answering from a sync API that is behind the log")
		}
		return fn(r, dev)
	})
}

// Routes is the route table, with absolute paths.
func (h *Handlers) Routes() []httputil.Route {
	var routes []httputil.Route
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		routes = append(routes,
			httputil.Route{Name: "sync", Method: http.MethodGet, Path: prefix + "/sync", Handler: h.authenticated(h.sync)},
			httputil.Route{Name: "messages", Method: http.MethodGet, Path: prefix + "/rooms/{roomId}/messages", Handler: h.authenticated(h.messages)},
			httputil.Route{Name: "context", Method: http.MethodGet, Path: prefix + "/rooms/{roomId}/context/{eventId}", Handler: h.authenticated(h.context)},
			httputil.Route{Name: "event", Method: http.MethodGet, Path: prefix + "/rooms/{roomId}/event/{eventId}", Handler: h.authenticated(h.event)},
			httputil.Route{Name: "events", Method: http.MethodGet, Path: prefix + "/events", Handler: h.authenticated(h.events)},
			httputil.Route{Name: "userDirectorySearch", Method: http.MethodPost, Path: prefix + "/user_directory/search", Handler: h.authenticated(h.userDirectorySearch)},
			httputil.Route{Name: "keyChanges", Method: http.MethodGet, Path: prefix + "/keys/changes", Handler: h.authenticated(h.keyChanges)},
			httputil.Route{Name: "peek", Method: http.MethodPost, Path: prefix + "/peek/{roomIDOrAlias}", Handler: h.authenticated(h.peek)},
			httputil.Route{Name: "unpeek", Method: http.MethodPost, Path: prefix + "/rooms/{roomId}/unpeek", Handler: h.authenticated(h.unpeek)},
		)
	}
	const v1 = "/_matrix/client/v1/rooms/{roomId}"
	get := http.MethodGet
	return append(routes,
		httputil.Route{Name: "relations", Method: get, Path: v1 + "/relations/{eventId}", Handler: h.authenticated(h.relations)},
		httputil.Route{Name: "relationsOfType", Method: get, Path: v1 + "/relations/{eventId}/{relType}", Handler: h.authenticated(h.relations)},
		httputil.Route{Name: "relationsOfTypes", Method: get, Path: v1 + "/relations/{eventId}/{relType}/{eventType}", Handler: h.authenticated(h.relations)},
		httputil.Route{Name: "threads", Method: get, Path: v1 + "/threads", Handler: h.authenticated(h.threads)},
		httputil.Route{Name: "slidingSync", Method: http.MethodPost, Path: SlidingSyncPath, Handler: h.authenticated(h.slidingSync)},
	)
}

func (h *Handlers) sync(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	req, err := h.parseSync(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	setPresence := r.URL.Query().Get("set_presence")
	switch setPresence {
	case "":
		setPresence = "online"
	case "online", "unavailable", "offline":
	default:
		return httputil.Response{}, matrixerr.InvalidParam("set_presence must be online, unavailable or offline")
	}
	if h.Presence != nil && setPresence != "offline" {
		if _, err := h.Presence.Report(r.Context(), dev.UserID, setPresence); err != nil {
			httputil.Logger(r).WithError(err).Warn("reporting presence from /sync failed")
		}
	}
	res, err := h.Syncer.Sync(r.Context(), req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}

// events is the deprecated GET /events (still used by clients and by sytest's helpers).
func (h *Handlers) events(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	q := r.URL.Query()
	req := &internal.EventsRequest{UserID: dev.UserID, DeviceID: dev.DeviceID, RoomID: q.Get("room_id")}
	if req.RoomID == "" && dev.IsGuest() {
		// The guest access module opens /events to guests only for room previews.
		return httputil.Response{}, matrixerr.GuestAccessForbidden("guests may call /events only with a room_id")
	}
	if s := q.Get("from"); s != "" {
		tok, err := types.ParseStreamToken("from", s)
		if err != nil {
			return httputil.Response{}, err
		}
		if tok.Position < 0 {
			return httputil.Response{}, matrixerr.InvalidParam("from is not a valid token")
		}
		req.From = &tok
	}
	var err error
	if req.Timeout, err = timeoutParam(q); err != nil {
		return httputil.Response{}, err
	}
	// A client polling the event stream is connected, as one calling /sync is: it has no
	// set_presence, so it counts as online (as in Synapse, whose clients and sytest's
	// helpers rely on it). A guest's polling leaves presence alone, as there.
	if h.Presence != nil && !dev.IsGuest() {
		if _, err := h.Presence.Report(r.Context(), dev.UserID, "online"); err != nil {
			httputil.Logger(r).WithError(err).Warn("reporting presence from /events failed")
		}
	}
	res, err := h.Syncer.Events(r.Context(), req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}

// timeoutParam parses a long-poll's timeout in milliseconds, capped at MaxSyncTimeout.
func timeoutParam(q url.Values) (time.Duration, error) {
	s := q.Get("timeout")
	if s == "" {
		return 0, nil
	}
	ms, err := parseCount(s)
	if err != nil {
		return 0, matrixerr.InvalidParam("timeout must be a non-negative number of milliseconds")
	}
	return min(time.Duration(min(ms, int64(MaxSyncTimeout/time.Millisecond)))*time.Millisecond, MaxSyncTimeout), nil
}

// keyChanges is GET /keys/changes?from=&to=: users whose device lists changed between two
// sync tokens.
func (h *Handlers) keyChanges(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	q := r.URL.Query()
	var toks [2]types.StreamToken
	for i, name := range []string{"from", "to"} {
		v := q.Get(name)
		if v == "" {
			return httputil.Response{}, matrixerr.MissingParam(name + " is required")
		}
		tok, err := types.ParseStreamToken(name, v)
		if err != nil {
			return httputil.Response{}, err
		}
		if tok.Position < 0 {
			return httputil.Response{}, matrixerr.InvalidParam(name + " is not a valid token")
		}
		toks[i] = tok
	}
	dl, err := h.Syncer.KeyChanges(r.Context(), dev.UserID, toks[0].Position, toks[1].Position)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(dl.MarshalKeyChanges()), nil
}

// parseSync validates /sync's query parameters.
func (h *Handlers) parseSync(r *http.Request, dev *uapi.Device) (*internal.SyncRequest, error) {
	q := r.URL.Query()
	req := &internal.SyncRequest{UserID: dev.UserID, DeviceID: dev.DeviceID, Filter: &types.Filter{}}
	if s := q.Get("since"); s != "" {
		tok, err := types.ParseStreamToken("since", s)
		if err != nil {
			return nil, err
		}
		if tok.Position < 0 {
			// Only /messages and /context hand out negative positions (backfilled history).
			return nil, matrixerr.InvalidParam("since is not a valid token")
		}
		req.Since = &tok
	}
	timeout, err := timeoutParam(q)
	if err != nil {
		return nil, err
	}
	req.Timeout = timeout
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return nil, matrixerr.InvalidParam("full_state must be true or false")
	}
	if f := q.Get("filter"); f != "" {
		filter, err := h.resolveFilter(r.Context(), dev.UserID, f)
		if err != nil {
			return nil, err
		}
		req.Filter = filter
	}
	return req, nil
}

// resolveFilter parses an inline filter, or loads a stored one by ID.
func (h *Handlers) resolveFilter(ctx context.Context, userID, f string) (*types.Filter, error) {
	if strings.HasPrefix(f, "{") {
		return types.ParseFilter([]byte(f))
	}
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	b, err := h.FilterLookup(ctx, localpart, f)
	var merr *matrixerr.Error
	if errors.As(err, &merr) && merr.Status == http.StatusNotFound {
		return nil, matrixerr.InvalidParam("no filter with this ID")
	}
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, matrixerr.InvalidParam("no filter with this ID")
	}
	return types.ParseFilter(b)
}

// roomEventFilter parses the optional filter parameter of /messages and /context.
func roomEventFilter(q url.Values) (*types.RoomEventFilter, error) {
	f := q.Get("filter")
	if f == "" {
		return &types.RoomEventFilter{}, nil
	}
	return types.ParseRoomEventFilter([]byte(f))
}

// roomIDVar is the path's room ID; a malformed one is 400 M_INVALID_PARAM, as in the
// client API's room endpoints.
func roomIDVar(r *http.Request) (string, error) {
	roomID := httputil.Vars(r)["roomId"]
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", matrixerr.InvalidParam("invalid room ID")
	}
	return roomID, nil
}

// limitParam parses a non-negative limit, with a default (for none or 0) and a cap: an
// integer too large for an int is clamped to the cap like any other large one; a negative
// or non-integer limit is 400 M_INVALID_PARAM.
func limitParam(q url.Values, def, maxLimit int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := parseCount(s)
	if err != nil {
		return 0, matrixerr.InvalidParam("limit must be a non-negative integer")
	}
	if n == 0 {
		return def, nil
	}
	return int(min(n, int64(maxLimit))), nil
}

// parseCount parses a non-negative decimal integer, saturating at math.MaxInt64.
func parseCount(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) && n > 0 {
		return n, nil
	}
	if err != nil || n < 0 {
		return 0, errors.New("not a non-negative integer")
	}
	return n, nil
}

func (h *Handlers) messages(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	q := r.URL.Query()
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	req := &internal.MessagesRequest{UserID: dev.UserID, DeviceID: dev.DeviceID, RoomID: roomID}
	switch q.Get("dir") {
	case "b":
		req.Backward = true
	case "f":
	default:
		return httputil.Response{}, matrixerr.InvalidParam("dir must be b or f")
	}
	for _, t := range []struct {
		name string
		dst  **types.StreamToken
	}{{"from", &req.From}, {"to", &req.To}} {
		if s := q.Get(t.name); s != "" {
			tok, err := types.ParseStreamToken(t.name, s)
			if err != nil {
				return httputil.Response{}, err
			}
			*t.dst = &tok
		}
	}
	if req.Limit, err = limitParam(q, defaultMessagesLimit, maxMessagesLimit); err != nil {
		return httputil.Response{}, err
	}
	if req.Filter, err = roomEventFilter(q); err != nil {
		return httputil.Response{}, err
	}
	res, err := h.Syncer.Messages(r.Context(), req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}

// event is GET /rooms/{roomId}/event/{eventId}, with bundled aggregations.
func (h *Handlers) event(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	ev, err := h.Syncer.Event(r.Context(), dev.UserID, dev.DeviceID, roomID, httputil.Vars(r)["eventId"])
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(ev), nil
}

func (h *Handlers) context(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	q := r.URL.Query()
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	req := &internal.ContextRequest{UserID: dev.UserID, DeviceID: dev.DeviceID, RoomID: roomID, EventID: httputil.Vars(r)["eventId"]}
	if req.Limit, err = limitParam(q, defaultContextLimit, maxContextLimit); err != nil {
		return httputil.Response{}, err
	}
	if req.Filter, err = roomEventFilter(q); err != nil {
		return httputil.Response{}, err
	}
	res, err := h.Syncer.Context(r.Context(), req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}
