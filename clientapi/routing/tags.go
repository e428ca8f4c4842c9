package routing

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// roomTagType is the room account data type that holds a room's tags.
const roomTagType = "m.tag"

// GetTags is GET /user/{userId}/rooms/{roomId}/tags: the room's m.tag account data, or no
// tags when it has none.
func (a *Accounts) GetTags(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID, roomID, err := tagTarget(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	res, err := a.UserAPI.QueryAccountData(r.Context(), &uapi.QueryAccountDataRequest{UserID: userID, RoomID: roomID, DataType: roomTagType})
	if err != nil {
		return httputil.Response{}, err
	}
	var data struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if raw, ok := res.Rooms[roomID][roomTagType]; ok && json.Unmarshal(raw, &data) != nil {
		data.Tags = nil // another shape, set through the generic account data route
	}
	if data.Tags == nil {
		data.Tags = map[string]json.RawMessage{}
	}
	return httputil.OK(data), nil
}

// PutTag is PUT /user/{userId}/rooms/{roomId}/tags/{tag}.
func (a *Accounts) PutTag(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID, roomID, err := tagTarget(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	content, err := decodeObject(r)
	if err != nil {
		return httputil.Response{}, err
	}
	var shape struct {
		Order *float64 `json:"order"`
	}
	if json.Unmarshal(content, &shape) != nil {
		return httputil.Response{}, matrixerr.BadJSON("order must be a number")
	}
	tag := httputil.Vars(r)["tag"]
	if _, err = a.UserAPI.PerformRoomTag(r.Context(), &uapi.PerformRoomTagRequest{UserID: userID, RoomID: roomID, Tag: tag, Content: content}); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// DeleteTag is DELETE /user/{userId}/rooms/{roomId}/tags/{tag}; removing a tag the room
// does not have succeeds.
func (a *Accounts) DeleteTag(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID, roomID, err := tagTarget(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	tag := httputil.Vars(r)["tag"]
	if _, err = a.UserAPI.PerformRoomTag(r.Context(), &uapi.PerformRoomTagRequest{UserID: userID, RoomID: roomID, Tag: tag}); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// tagTarget returns the user and room of a tags path.
func tagTarget(r *http.Request, dev *uapi.Device) (userID, roomID string, err error) {
	if userID, err = userIDVar(r, dev); err != nil {
		return "", "", err
	}
	if roomID, err = roomIDVar(r); err != nil {
		return "", "", err
	}
	return userID, roomID, nil
}
