package routing

import (
	"net/http"
	"net/url"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/syncapi/internal"
	"github.com/matrix-org/dendrite/syncapi/types"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// tokenParam parses an optional stream token parameter.
func tokenParam(q url.Values, name string) (*types.StreamToken, error) {
	s := q.Get(name)
	if s == "" {
		return nil, nil
	}
	tok, err := types.ParseStreamToken(name, s)
	if err != nil {
		return nil, err
	}
	return &tok, nil
}

// relations is GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (h *Handlers) relations(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	q := r.URL.Query()
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	vars := httputil.Vars(r)
	req := &internal.RelationsRequest{UserID: dev.UserID, DeviceID: dev.DeviceID, RoomID: roomID, EventID: vars["eventId"],
		RelType: vars["relType"], EventType: vars["eventType"]}
	switch q.Get("dir") {
	case "", "b":
		req.Backward = true
	case "f":
	default:
		return httputil.Response{}, matrixerr.InvalidParam("dir must be b or f")
	}
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		req.Recurse = true
	default:
		return httputil.Response{}, matrixerr.InvalidParam("recurse must be true or false")
	}
	if req.From, err = tokenParam(q, "from"); err != nil {
		return httputil.Response{}, err
	}
	if req.To, err = tokenParam(q, "to"); err != nil {
		return httputil.Response{}, err
	}
	if req.Limit, err = limitParam(q, internal.DefaultRelationsLimit, internal.MaxRelationsLimit); err != nil {
		return httputil.Response{}, err
	}
	res, err := h.Syncer.Relations(r.Context(), req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}

// threads is GET /v1/rooms/{roomId}/threads.
func (h *Handlers) threads(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	q := r.URL.Query()
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	req := &internal.ThreadsRequest{UserID: dev.UserID, DeviceID: dev.DeviceID, RoomID: roomID}
	switch q.Get("include") {
	case "", "all":
	case "participated":
		req.Participated = true
	default:
		return httputil.Response{}, matrixerr.InvalidParam("include must be all or participated")
	}
	if req.From, err = tokenParam(q, "from"); err != nil {
		return httputil.Response{}, err
	}
	if req.Limit, err = limitParam(q, internal.DefaultRelationsLimit, internal.MaxRelationsLimit); err != nil {
		return httputil.Response{}, err
	}
	res, err := h.Syncer.Threads(r.Context(), req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}
