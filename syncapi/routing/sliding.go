package routing

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/syncapi/internal"
	"github.com/matrix-org/dendrite/syncapi/types"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// SlidingSyncPath is simplified sliding sync's unstable endpoint (MSC4186).
const SlidingSyncPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// slidingSync is POST SlidingSyncPath.
func (h *Handlers) slidingSync(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var raw json.RawMessage
	if err := httputil.DecodeJSON(r, &raw); err != nil {
		return httputil.Response{}, err
	}
	body := &types.SlidingRequest{}
	if err := json.Unmarshal(raw, body); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return httputil.Response{}, matrixerr.BadJSON("the request body has a field of the wrong type: " + typeErr.Field)
		}
		return httputil.Response{}, matrixerr.BadJSON("the request body has the wrong shape")
	}
	q := r.URL.Query()
	if err := body.Validate(q.Get("pos"), q.Get("timeout"), q.Get("set_presence")); err != nil {
		return httputil.Response{}, err
	}
	req := &internal.SlidingRequest{UserID: dev.UserID, DeviceID: dev.DeviceID, Body: body}
	if body.Pos != "" && body.Timeout != nil {
		// The MSC ignores timeout without a pos: the first response never waits.
		req.Timeout = min(time.Duration(min(*body.Timeout, int64(MaxSyncTimeout/time.Millisecond)))*time.Millisecond, MaxSyncTimeout)
	}
	if h.Presence != nil && body.SetPresence != "offline" {
		presence := body.SetPresence
		if presence == "" {
			presence = "online"
		}
		if _, err := h.Presence.Report(r.Context(), dev.UserID, presence); err != nil {
			httputil.Logger(r).WithError(err).Warn("reporting presence from sliding sync failed")
		}
	}
	res, err := h.Syncer.Sliding(r.Context(), req)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}
