package routing

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Limits of GET /notifications' page size.
const (
	defaultNotificationsLimit = 20
	maxNotificationsLimit     = 100
)

// notification is one entry of GET /notifications.
type notification struct {
	Actions json.RawMessage   `json:"actions"`
	Event   clientevent.Event `json:"event"`
	// ProfileTag is always present, null: rules carry no profile tag here.
	ProfileTag *string `json:"profile_tag"`
	Read       bool    `json:"read"`
	RoomID     string  `json:"room_id"`
	TS         int64   `json:"ts"`
}

type notificationsResponse struct {
	NextToken     string         `json:"next_token,omitempty"`
	Notifications []notification `json:"notifications"`
}

// GetNotifications is GET /notifications: the caller's notifications, newest first,
// paginated by from (the previous page's next_token), limit and only=highlight.
func (h *Handlers) GetNotifications(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	q := r.URL.Query()
	var before int64
	if from := q.Get("from"); from != "" {
		n, err := strconv.ParseInt(from, 10, 64)
		if err != nil || n <= 0 {
			return httputil.Response{}, matrixerr.InvalidParam("from is not a token this server gave")
		}
		before = n
	}
	limit := defaultNotificationsLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return httputil.Response{}, matrixerr.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(max(n, 1), maxNotificationsLimit)
	}
	ns, err := h.DB.Notifications(r.Context(), dev.UserID, before, limit, q.Get("only") == "highlight")
	if err != nil {
		return httputil.Response{}, err
	}
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.EventID
	}
	events := map[string]clientevent.Event{}
	if len(ids) > 0 {
		res, err := h.Rooms.QueryEventsByID(r.Context(), &rsapi.QueryEventsByIDRequest{EventIDs: ids})
		if err != nil {
			return httputil.Response{}, err
		}
		for _, e := range res.Events {
			ce, err := clientevent.New(e.EventID(), e.JSON())
			if err != nil {
				return httputil.Response{}, err
			}
			events[e.EventID()] = ce
		}
	}
	out := notificationsResponse{Notifications: []notification{}}
	for _, n := range ns {
		ev, ok := events[n.EventID]
		if !ok {
			continue
		}
		out.Notifications = append(out.Notifications, notification{Actions: n.Actions, Event: ev, Read: n.Read, RoomID: n.RoomID, TS: n.TS})
	}
	if len(ns) == limit {
		out.NextToken = strconv.FormatInt(ns[len(ns)-1].ID, 10)
	}
	return httputil.OK(out), nil
}
