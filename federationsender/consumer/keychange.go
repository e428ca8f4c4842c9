package consumer

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/matrix-org/dendrite/internal/eventlog"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// EDU types of device lists (server-server API, "Device Management" and cross-signing).
const (
	EDUDeviceListUpdate = "m.device_list_update"
	EDUSigningKeyUpdate = "m.signing_key_update"
)

// KeyChanges consumes OutputKeyChangeEvent: each change of one of our users' devices is
// queued as an m.device_list_update EDU, each change of their cross-signing keys as an
// m.signing_key_update EDU, for every other server sharing a room with them. Changes of
// other servers' users (which the userapi announces for our syncing clients) are not sent.
type KeyChanges struct {
	s *Shared
}

// NewKeyChanges builds the OutputKeyChangeEvent handler.
func NewKeyChanges(s *Shared) *KeyChanges {
	return &KeyChanges{s: s}
}

// keyEDU is one EDU to queue for the servers sharing a room with userID.
type keyEDU struct {
	userID, eduType string
	content         any
}

type deviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id,omitempty"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

type signingKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// Prepare is the consumer's first phase (see Shared.Prepare).
func (k *KeyChanges) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	return k.s.Prepare(k.prepare)(ctx, recs)
}

// prepare turns our users' key changes into EDUs. The user's device-list stream counts
// every key change, cross-signing ones too, so prev_id is the stream ID before this one: a
// receiver that did not see it (it was a signing key update, or lost) resyncs the list
// through /user/devices, as the spec says.
func (k *KeyChanges) prepare(ctx context.Context, recs []eventlog.Record, lk *lookups) (applyFunc, error) {
	var edus []keyEDU
	for _, rec := range recs {
		var o uapi.OutputKeyChangeEvent
		if err := decode(rec, &o); err != nil {
			return nil, err
		}
		var userID, eduType string
		var content any
		switch {
		case o.Type == uapi.OutputKeyChangeTypeDeviceKeys && o.DeviceKeys != nil:
			d := o.DeviceKeys
			u := deviceListUpdate{UserID: d.UserID, DeviceID: d.DeviceID, DisplayName: d.DisplayName, StreamID: d.StreamID, Deleted: d.Deleted, Keys: d.Keys}
			if d.StreamID > 1 {
				u.PrevID = []int64{d.StreamID - 1}
			}
			userID, eduType, content = d.UserID, EDUDeviceListUpdate, u
		case o.Type == uapi.OutputKeyChangeTypeCrossSigning && o.CrossSigning != nil && o.CrossSigning.NotifyOnly != "":
			continue // a user-signing key or a signature on another user's key: no other server's business
		case o.Type == uapi.OutputKeyChangeTypeCrossSigning && o.CrossSigning != nil:
			c := o.CrossSigning
			userID, eduType, content = c.UserID, EDUSigningKeyUpdate, signingKeyUpdate{UserID: c.UserID, MasterKey: c.MasterKey, SelfSigningKey: c.SelfSigningKey}
		default:
			continue // a type this reader does not know: skipped, as the topic's contract says
		}
		if !k.s.isLocal(userID) {
			continue
		}
		if err := k.s.loadUserRooms(ctx, lk, userID); err != nil {
			return nil, err
		}
		edus = append(edus, keyEDU{userID: userID, eduType: eduType, content: content})
	}
	return func(ctx context.Context, tx *sql.Tx, lk *lookups) ([]string, error) {
		var woken []string
		for _, e := range edus {
			dests, err := k.s.serversSharingRooms(ctx, tx, lk, e.userID)
			if err != nil {
				return nil, err
			}
			if err := k.s.queueEDU(ctx, tx, dests, e.eduType, e.content); err != nil {
				return nil, err
			}
			woken = append(woken, dests...)
		}
		return woken, nil
	}, nil
}
