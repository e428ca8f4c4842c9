package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// RemoteTypingTimeout is how long a typing notification from another server lasts unless
// it is repeated or stopped.
const RemoteTypingTimeout = 30 * time.Second

// EDUs hands the EDUs of received transactions to the servers that own them: m.typing and
// m.direct_to_device to the eduserver, m.receipt to the receiptserver, m.presence to the
// presenceserver, m.device_list_update and m.signing_key_update to the userapi. EDUs are best effort: one that is malformed, names users of another
// server than the origin, or cannot be applied is logged and dropped; the transaction
// still succeeds.
type EDUs struct {
	ServerName spec.ServerName
	EDU        eduapi.InputAPI
	Receipts   receiptapi.InputAPI
	// Presence is nil when presence from other servers is not accepted.
	Presence presenceapi.InputAPI
	// DeviceLists takes m.device_list_update and m.signing_key_update (nil: dropped).
	DeviceLists uapi.DeviceListInputAPI
	Rooms       rsapi.QueryAPI
	Logger      *logrus.Entry
	Now         func() time.Time
}

type edu struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// Receive applies every EDU of a transaction from origin.
func (e *EDUs) Receive(ctx context.Context, origin spec.ServerName, edus []json.RawMessage) {
	for _, raw := range edus {
		var ev edu
		err := json.Unmarshal(raw, &ev)
		if err == nil {
			err = e.receive(ctx, origin, &ev)
		}
		if err != nil {
			e.Logger.WithError(err).WithFields(logrus.Fields{"origin": origin, "edu_type": ev.Type}).Info("EDU dropped")
		}
	}
}

func (e *EDUs) receive(ctx context.Context, origin spec.ServerName, ev *edu) error {
	switch ev.Type {
	case "m.typing":
		return e.typing(ctx, origin, ev.Content)
	case "m.receipt":
		return e.receipts(ctx, origin, ev.Content)
	case "m.presence":
		return e.presence(ctx, origin, ev.Content)
	case "m.direct_to_device":
		return e.toDevice(ctx, origin, ev.Content)
	case "m.device_list_update", "m.signing_key_update":
		return e.deviceList(ctx, origin, ev)
	}
	return nil // EDU types this server does not use are ignored, as the spec allows
}

// ofOrigin reports whether userID is a valid user ID of origin.
func ofOrigin(userID string, origin spec.ServerName) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && u.Domain() == origin
}

var errNotOrigin = errors.New("names a user of another server than the origin")

func (e *EDUs) typing(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if !ofOrigin(c.UserID, origin) {
		return errNotOrigin
	}
	if err := RoomACL(ctx, e.Rooms, c.RoomID, origin); err != nil {
		return err
	}
	m, err := e.Rooms.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: c.RoomID, UserID: c.UserID})
	if err != nil {
		return err
	}
	if m.Membership != spec.Join {
		return fmt.Errorf("%s is not joined to %s", c.UserID, c.RoomID)
	}
	return e.EDU.InputTyping(ctx, &eduapi.InputTypingEvent{RoomID: c.RoomID, UserID: c.UserID, Typing: c.Typing,
		TimeoutMS: RemoteTypingTimeout.Milliseconds(), OriginTS: e.Now().UnixMilli()})
}

// receipts applies m.read receipts (private ones never leave their server).
func (e *EDUs) receipts(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	type receipt struct {
		EventIDs []string `json:"event_ids"`
		Data     struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		} `json:"data"`
	}
	var c map[string]map[string]map[string]receipt // room -> type -> user
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	var errs []error
	for roomID, byType := range c {
		if err := RoomACL(ctx, e.Rooms, roomID, origin); err != nil {
			errs = append(errs, err) // every receipt of the room is ignored
			continue
		}
		for userID, r := range byType[receiptapi.ReceiptRead] {
			if !ofOrigin(userID, origin) || len(r.EventIDs) == 0 {
				errs = append(errs, fmt.Errorf("receipt of %s: %w or no event", userID, errNotOrigin))
				continue
			}
			res, err := e.Rooms.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: r.EventIDs[:1]})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if len(res.Events) == 0 {
				continue // an event this server does not have: no client here could place the receipt
			}
			errs = append(errs, e.Receipts.InputReceipt(ctx, &receiptapi.InputReceiptEvent{RoomID: roomID, UserID: userID,
				Type: receiptapi.ReceiptRead, EventID: r.EventIDs[0], ThreadID: r.Data.ThreadID, Depth: res.Events[0].PDU.Depth(), TS: r.Data.TS}))
		}
	}
	return errors.Join(errs...)
}

func (e *EDUs) presence(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	if e.Presence == nil {
		return nil
	}
	var c struct {
		Push []struct {
			UserID        string  `json:"user_id"`
			Presence      string  `json:"presence"`
			StatusMsg     *string `json:"status_msg"`
			LastActiveAgo int64   `json:"last_active_ago"`
		} `json:"push"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	var errs []error
	now := e.Now().UnixMilli()
	for _, p := range c.Push {
		if !ofOrigin(p.UserID, origin) {
			errs = append(errs, fmt.Errorf("presence of %s: %w", p.UserID, errNotOrigin))
			continue
		}
		errs = append(errs, e.Presence.InputPresence(ctx, &presenceapi.InputPresenceEvent{UserID: p.UserID, Kind: presenceapi.InputKindRemote,
			Presence: p.Presence, StatusMsg: p.StatusMsg, TS: now - max(p.LastActiveAgo, 0)}))
	}
	return errors.Join(errs...)
}

// toDevice passes on the messages for this server's users; the message ID, unique per
// sender, makes a retried EDU a repeated transaction, applied once.
func (e *EDUs) toDevice(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if !ofOrigin(c.Sender, origin) {
		return errNotOrigin
	}
	if c.Type == "" || c.MessageID == "" {
		return errors.New("to-device EDU without type or message ID")
	}
	local := map[string]map[string]json.RawMessage{}
	for userID, byDevice := range c.Messages {
		if u, err := spec.NewUserID(userID, true); err == nil && u.Domain() == e.ServerName {
			local[userID] = byDevice
		}
	}
	if len(local) == 0 {
		return nil
	}
	return e.EDU.InputSendToDevice(ctx, &eduapi.InputSendToDeviceEvent{Sender: c.Sender, TxnID: "federation:" + c.MessageID,
		Type: c.Type, Messages: local})
}

// deviceList hands a device list or signing key update of one of origin's users to the
// userapi.
func (e *EDUs) deviceList(ctx context.Context, origin spec.ServerName, ev *edu) error {
	if e.DeviceLists == nil {
		return nil
	}
	in := &uapi.InputDeviceListUpdate{Origin: string(origin)}
	if ev.Type == "m.device_list_update" {
		var c uapi.DeviceListUpdate
		if err := json.Unmarshal(ev.Content, &c); err != nil {
			return err
		}
		if c.DeviceID == "" {
			return errors.New("m.device_list_update without a device ID")
		}
		in.DeviceList, in.UserID = &c, c.UserID
	} else {
		var c struct {
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(ev.Content, &c); err != nil {
			return err
		}
		in.SigningKeys, in.UserID = ev.Content, c.UserID
	}
	if !ofOrigin(in.UserID, origin) {
		return errNotOrigin
	}
	return e.DeviceLists.InputDeviceListUpdate(ctx, in)
}
