package routing

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// filterShape is the part of a filter whose types are checked before it is stored;
// unknown fields are kept as sent.
type filterShape struct {
	EventFields []string         `json:"event_fields"`
	EventFormat string           `json:"event_format"`
	Presence    *eventFilter     `json:"presence"`
	AccountData *eventFilter     `json:"account_data"`
	Room        *roomFilterShape `json:"room"`
}

type eventFilter struct {
	Limit      *int64   `json:"limit"`
	NotSenders []string `json:"not_senders"`
	NotTypes   []string `json:"not_types"`
	Senders    []string `json:"senders"`
	Types      []string `json:"types"`
}

type roomEventFilter struct {
	eventFilter
	NotRooms                []string `json:"not_rooms"`
	Rooms                   []string `json:"rooms"`
	ContainsURL             *bool    `json:"contains_url"`
	IncludeRedundantMembers *bool    `json:"include_redundant_members"`
	LazyLoadMembers         *bool    `json:"lazy_load_members"`
	UnreadThreadNotifs      *bool    `json:"unread_thread_notifications"`
}

type roomFilterShape struct {
	AccountData  *roomEventFilter `json:"account_data"`
	Ephemeral    *roomEventFilter `json:"ephemeral"`
	IncludeLeave *bool            `json:"include_leave"`
	NotRooms     []string         `json:"not_rooms"`
	Rooms        []string         `json:"rooms"`
	State        *roomEventFilter `json:"state"`
	Timeline     *roomEventFilter `json:"timeline"`
}

// limits are the filter's limits, nil where absent. A large limit is stored as sent: the
// sync API clamps it when it reads it.
func (f *filterShape) limits() []*int64 {
	out := []*int64{}
	for _, ef := range []*eventFilter{f.Presence, f.AccountData} {
		if ef != nil {
			out = append(out, ef.Limit)
		}
	}
	if f.Room != nil {
		for _, rf := range []*roomEventFilter{f.Room.AccountData, f.Room.Ephemeral, f.Room.State, f.Room.Timeline} {
			if rf != nil {
				out = append(out, rf.Limit)
			}
		}
	}
	return out
}

// badIDs reports which of the filter's room and user ID lists holds something that is not
// a room ID or a user ID ("" when all are well formed).
func (f *filterShape) badIDs() string {
	var rooms, users [][]string
	for _, ef := range []*eventFilter{f.Presence, f.AccountData} {
		if ef != nil {
			users = append(users, ef.Senders, ef.NotSenders)
		}
	}
	if f.Room != nil {
		rooms = append(rooms, f.Room.Rooms, f.Room.NotRooms)
		for _, rf := range []*roomEventFilter{f.Room.AccountData, f.Room.Ephemeral, f.Room.State, f.Room.Timeline} {
			if rf != nil {
				rooms = append(rooms, rf.Rooms, rf.NotRooms)
				users = append(users, rf.Senders, rf.NotSenders)
			}
		}
	}
	for _, list := range rooms {
		for _, id := range list {
			if _, err := spec.NewRoomID(id); err != nil {
				return "rooms and not_rooms must hold room IDs"
			}
		}
	}
	for _, list := range users {
		for _, id := range list {
			if _, err := spec.NewUserID(id, true); err != nil {
				return "senders and not_senders must hold user IDs"
			}
		}
	}
	return ""
}

// PutFilter is POST /user/{userId}/filter.
func (a *Accounts) PutFilter(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID, err := userIDVar(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	var raw json.RawMessage
	if err = httputil.DecodeJSON(r, &raw); err != nil {
		return httputil.Response{}, err
	}
	var shape *filterShape
	if err = json.Unmarshal(raw, &shape); err != nil || shape == nil {
		return httputil.Response{}, matrixerr.BadJSON("the filter does not have the filter's shape")
	}
	switch shape.EventFormat {
	case "", "client", "federation":
	default:
		return httputil.Response{}, matrixerr.BadJSON("event_format must be client or federation")
	}
	if msg := shape.badIDs(); msg != "" {
		return httputil.Response{}, matrixerr.BadJSON(msg)
	}
	for _, l := range shape.limits() {
		if l != nil && *l < 0 {
			return httputil.Response{}, matrixerr.BadJSON("filter limits must not be negative")
		}
	}
	res, err := a.UserAPI.PerformPutFilter(r.Context(), &uapi.PerformPutFilterRequest{Localpart: localpartOf(userID), Filter: raw})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"filter_id": res.FilterID}), nil
}

// GetFilter is GET /user/{userId}/filter/{filterId}.
func (a *Accounts) GetFilter(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID, err := userIDVar(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	res, err := a.UserAPI.QueryFilter(r.Context(), &uapi.QueryFilterRequest{Localpart: localpartOf(userID), FilterID: httputil.Vars(r)["filterID"]})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res.Filter), nil
}

// serverManagedTypes are account data types clients may read but not set.
var serverManagedTypes = map[string]bool{"m.fully_read": true, "m.push_rules": true}

// accountDataTarget returns the user, room ("" for global) and type of an account data
// path.
func accountDataTarget(r *http.Request, dev *uapi.Device) (userID, roomID, dataType string, err error) {
	if userID, err = userIDVar(r, dev); err != nil {
		return "", "", "", err
	}
	if _, ok := httputil.Vars(r)["roomID"]; ok {
		if roomID, err = roomIDVar(r); err != nil {
			return "", "", "", err
		}
	}
	return userID, roomID, httputil.Vars(r)["type"], nil
}

// PutAccountData is PUT /user/{userId}/account_data/{type} and
// PUT /user/{userId}/rooms/{roomId}/account_data/{type}.
func (a *Accounts) PutAccountData(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID, roomID, dataType, err := accountDataTarget(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	if serverManagedTypes[dataType] {
		return httputil.Response{}, matrixerr.ServerManaged("the server manages " + dataType)
	}
	content, err := decodeObject(r)
	if err != nil {
		return httputil.Response{}, err
	}
	_, err = a.UserAPI.PerformAccountData(r.Context(), &uapi.PerformAccountDataRequest{UserID: userID, RoomID: roomID, DataType: dataType, Data: content})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// GetAccountData is GET /user/{userId}/account_data/{type} and
// GET /user/{userId}/rooms/{roomId}/account_data/{type}.
func (a *Accounts) GetAccountData(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID, roomID, dataType, err := accountDataTarget(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	res, err := a.UserAPI.QueryAccountData(r.Context(), &uapi.QueryAccountDataRequest{UserID: userID, RoomID: roomID, DataType: dataType})
	if err != nil {
		return httputil.Response{}, err
	}
	content, ok := res.Global[dataType]
	if roomID != "" {
		content, ok = res.Rooms[roomID][dataType]
	}
	if !ok {
		return httputil.Response{}, matrixerr.NotFound("no account data of this type")
	}
	return httputil.OK(content), nil
}
