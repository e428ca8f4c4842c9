package routing

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/roomalias"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// peek is POST /peek/{roomIDOrAlias} (MSC2753): the device peeks into a world-readable
// room by ID or local alias. The body is a JSON object (sytest sends {}); the answer is
// the room's ID.
func (h *Handlers) peek(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	target := httputil.Vars(r)["roomIDOrAlias"]
	roomID := target
	if strings.HasPrefix(target, "#") {
		if _, err := roomalias.Parse(target); err != nil {
			return httputil.Response{}, matrixerr.InvalidParam("invalid room alias")
		}
		resolved, err := h.ResolveAlias(r.Context(), target)
		if err != nil {
			return httputil.Response{}, fmt.Errorf("resolve alias: %w", err)
		}
		if resolved == "" {
			return httputil.Response{}, matrixerr.NotFound("room alias not found")
		}
		roomID = resolved
	} else if _, err := spec.NewRoomID(target); err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("invalid room ID or alias")
	}
	if err := h.Syncer.Peek(r.Context(), dev.UserID, dev.DeviceID, roomID); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"room_id": roomID}), nil
}

// unpeek is POST /rooms/{roomId}/unpeek (MSC2753): the device's peek into the room ends,
// and the room leaves its rooms.peek. The body is a JSON object; ending a peek that is not
// there succeeds too, so a client may retry.
func (h *Handlers) unpeek(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	roomID := httputil.Vars(r)["roomId"]
	if _, err := spec.NewRoomID(roomID); err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("invalid room ID")
	}
	if _, err := h.Syncer.Unpeek(r.Context(), dev.UserID, dev.DeviceID, roomID); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}
