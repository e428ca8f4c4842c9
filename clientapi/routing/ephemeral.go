package routing

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// receiptFullyRead is the read marker, which is room account data, not a receipt.
const receiptFullyRead = "m.fully_read"

// Ephemeral serves typing, send-to-device, receipts, read markers and presence. Input goes
// to the EDU servers' logs; the handlers return once it is durably appended.
type Ephemeral struct {
	Rooms    *Rooms
	EDU      eduapi.InputAPI
	Receipts receiptapi.InputAPI
	// Presence and PresenceQuery are nil when presence is off.
	Presence      presenceapi.InputAPI
	PresenceQuery presenceapi.QueryAPI
}

// Routes lists the endpoints.
func (e *Ephemeral) Routes() []httputil.Route {
	auth := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(DeviceLookup(e.Rooms.UserAPI), h)
	}
	guest := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(GuestDeviceLookup(e.Rooms.UserAPI), h)
	}
	return clientPaths([]httputil.Route{
		{Name: "typing", Method: http.MethodPut, Path: "/rooms/{roomID}/typing/{userID}", Handler: auth(e.Typing)},
		{Name: "sendToDevice", Method: http.MethodPut, Path: "/sendToDevice/{eventType}/{txnID}", Handler: guest(e.SendToDevice)},
		{Name: "receipt", Method: http.MethodPost, Path: "/rooms/{roomID}/receipt/{receiptType}/{eventID}", Handler: auth(e.Receipt)},
		{Name: "readMarkers", Method: http.MethodPost, Path: "/rooms/{roomID}/read_markers", Handler: auth(e.ReadMarkers)},
		{Name: "putPresence", Method: http.MethodPut, Path: "/presence/{userID}/status", Handler: auth(e.PutPresence)},
		{Name: "getPresence", Method: http.MethodGet, Path: "/presence/{userID}/status", Handler: auth(e.GetPresence)},
	})
}

// Typing is PUT /rooms/{roomId}/typing/{userId}.
func (e *Ephemeral) Typing(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	if httputil.Vars(r)["userID"] != dev.UserID {
		return httputil.Response{}, matrixerr.Forbidden("you can only set your own typing state")
	}
	var body struct {
		Typing  *bool `json:"typing"`
		Timeout int64 `json:"timeout"`
	}
	if err = httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.Typing == nil {
		return httputil.Response{}, matrixerr.MissingParam("typing is required")
	}
	if body.Timeout < 0 {
		return httputil.Response{}, matrixerr.InvalidParam("timeout must not be negative")
	}
	if err = e.Rooms.requireJoined(r.Context(), roomID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	err = e.EDU.InputTyping(r.Context(), &eduapi.InputTypingEvent{RoomID: roomID, UserID: dev.UserID, Typing: *body.Typing,
		TimeoutMS: body.Timeout, OriginTS: time.Now().UnixMilli()})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// SendToDevice is PUT /sendToDevice/{eventType}/{txnId}. A repeated transaction ID from the
// same device is accepted and sends nothing again.
func (e *Ephemeral) SendToDevice(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	vars := httputil.Vars(r)
	var body struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.Messages == nil {
		return httputil.Response{}, matrixerr.BadJSON("messages must be an object of user IDs")
	}
	for userID, byDevice := range body.Messages {
		if _, err := spec.NewUserID(userID, true); err != nil {
			return httputil.Response{}, matrixerr.InvalidParam("invalid user ID " + userID)
		}
		for deviceID, content := range byDevice {
			if deviceID == "" || !isObject(content) {
				return httputil.Response{}, matrixerr.BadJSON("each message must be a JSON object for a device ID or *")
			}
		}
	}
	err := e.EDU.InputSendToDevice(r.Context(), &eduapi.InputSendToDeviceEvent{Sender: dev.UserID, SenderDevice: dev.DeviceID,
		TxnID: vars["txnID"], Type: vars["eventType"], Messages: body.Messages})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// Receipt is POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (e *Ephemeral) Receipt(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	vars := httputil.Vars(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	receiptType := vars["receiptType"]
	if receiptType != receiptapi.ReceiptRead && receiptType != receiptapi.ReceiptReadPrivate && receiptType != receiptFullyRead {
		return httputil.Response{}, matrixerr.InvalidParam("receipt type must be m.read, m.read.private or m.fully_read")
	}
	var body struct {
		ThreadID *string `json:"thread_id"`
	}
	if err = decodeOptional(r, &body); err != nil {
		return httputil.Response{}, err
	}
	threadID := ""
	if body.ThreadID != nil {
		threadID = *body.ThreadID
		if threadID == "" || receiptType == receiptFullyRead || (threadID != "main" && !strings.HasPrefix(threadID, "$")) {
			return httputil.Response{}, matrixerr.InvalidParam("thread_id must be main or a thread root's event ID, and m.fully_read has none")
		}
	}
	if err = e.Rooms.requireJoined(r.Context(), roomID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	if receiptType == receiptFullyRead {
		err = e.markFullyRead(r.Context(), roomID, dev.UserID, vars["eventID"])
	} else {
		err = e.sendReceipt(r.Context(), roomID, dev.UserID, receiptType, vars["eventID"], threadID)
	}
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// ReadMarkers is POST /rooms/{roomId}/read_markers.
func (e *Ephemeral) ReadMarkers(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	var body map[string]*string
	if err = httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if err = e.Rooms.requireJoined(r.Context(), roomID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	for _, t := range []string{receiptFullyRead, receiptapi.ReceiptRead, receiptapi.ReceiptReadPrivate} {
		eventID := body[t]
		if eventID == nil {
			continue
		}
		if t == receiptFullyRead {
			err = e.markFullyRead(r.Context(), roomID, dev.UserID, *eventID)
		} else {
			err = e.sendReceipt(r.Context(), roomID, dev.UserID, t, *eventID, "")
		}
		if err != nil {
			return httputil.Response{}, err
		}
	}
	return httputil.OK(struct{}{}), nil
}

// roomEvent returns the event if it is in the room, else 404.
func (e *Ephemeral) roomEvent(ctx context.Context, roomID, eventID string) (*rsapi.Event, error) {
	if !strings.HasPrefix(eventID, "$") {
		return nil, matrixerr.InvalidParam("invalid event ID")
	}
	res, err := e.Rooms.RSAPI.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{eventID}})
	if err != nil {
		return nil, err
	}
	if len(res.Events) == 0 {
		return nil, matrixerr.NotFound("no such event in this room")
	}
	return &res.Events[0], nil
}

func (e *Ephemeral) sendReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string) error {
	ev, err := e.roomEvent(ctx, roomID, eventID)
	if err != nil {
		return err
	}
	return e.Receipts.InputReceipt(ctx, &receiptapi.InputReceiptEvent{RoomID: roomID, UserID: userID, Type: receiptType, EventID: eventID,
		ThreadID: threadID, Depth: ev.PDU.Depth(), TS: time.Now().UnixMilli()})
}

func (e *Ephemeral) markFullyRead(ctx context.Context, roomID, userID, eventID string) error {
	if _, err := e.roomEvent(ctx, roomID, eventID); err != nil {
		return err
	}
	content, err := json.Marshal(map[string]string{"event_id": eventID})
	if err != nil {
		return err
	}
	_, err = e.Rooms.UserAPI.PerformAccountData(ctx, &uapi.PerformAccountDataRequest{UserID: userID, RoomID: roomID, DataType: receiptFullyRead, Data: content})
	return err
}

// PutPresence is PUT /presence/{userId}/status.
func (e *Ephemeral) PutPresence(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	if httputil.Vars(r)["userID"] != dev.UserID {
		return httputil.Response{}, matrixerr.Forbidden("you can only set your own presence")
	}
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	switch body.Presence {
	case presenceapi.Online, presenceapi.Unavailable, presenceapi.Offline:
	case "":
		return httputil.Response{}, matrixerr.MissingParam("presence is required")
	default:
		return httputil.Response{}, matrixerr.InvalidParam("presence must be online, unavailable or offline")
	}
	if e.Presence == nil {
		return httputil.OK(struct{}{}), nil
	}
	err := e.Presence.InputPresence(r.Context(), &presenceapi.InputPresenceEvent{UserID: dev.UserID, Kind: presenceapi.InputKindSet,
		Presence: body.Presence, StatusMsg: body.StatusMsg, TS: time.Now().UnixMilli()})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// GetPresence is GET /presence/{userId}/status: the user's own presence, or that of a user
// sharing a room with them.
func (e *Ephemeral) GetPresence(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	userID := httputil.Vars(r)["userID"]
	if _, err := spec.NewUserID(userID, true); err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("invalid user ID")
	}
	if userID != dev.UserID {
		shared, err := e.shareRoom(r.Context(), dev.UserID, userID)
		if err != nil {
			return httputil.Response{}, err
		}
		if !shared {
			return httputil.Response{}, matrixerr.Forbidden("you share no room with this user")
		}
	}
	p := presenceapi.Presence{UserID: userID, Presence: presenceapi.Offline}
	if e.PresenceQuery != nil {
		res, err := e.PresenceQuery.QueryPresence(r.Context(), &presenceapi.QueryPresenceRequest{UserID: userID})
		if err != nil {
			return httputil.Response{}, err
		}
		p = res.Presence
	}
	out := map[string]any{"presence": p.Presence, "currently_active": p.CurrentlyActive}
	if p.LastActiveTS > 0 {
		out["last_active_ago"] = max(time.Now().UnixMilli()-p.LastActiveTS, 0)
	}
	if p.StatusMsg != nil {
		out["status_msg"] = *p.StatusMsg
	}
	return httputil.OK(out), nil
}

func (e *Ephemeral) shareRoom(ctx context.Context, a, b string) (bool, error) {
	ra, err := e.Rooms.RSAPI.QueryRoomsForUser(ctx, &rsapi.QueryRoomsForUserRequest{UserID: a, Membership: spec.Join})
	if err != nil {
		return false, err
	}
	rb, err := e.Rooms.RSAPI.QueryRoomsForUser(ctx, &rsapi.QueryRoomsForUserRequest{UserID: b, Membership: spec.Join})
	if err != nil {
		return false, err
	}
	mine := make(map[string]bool, len(ra.RoomIDs))
	for _, id := range ra.RoomIDs {
		mine[id] = true
	}
	for _, id := range rb.RoomIDs {
		if mine[id] {
			return true, nil
		}
	}
	return false, nil
}
