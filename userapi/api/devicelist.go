package api

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// TopicInputDeviceListUpdate carries other servers' device list and cross-signing key
// updates (the m.device_list_update and m.signing_key_update EDUs).
//
// Producer: federationapi, through DeviceListProducer, after checking that the user is of
// the sending server. Key: user ID; per-user order, the order the EDUs arrived in.
// Payload: InputDeviceListUpdate, version 1. The userapi applies each update to its copy of
// the remote user's device list (an update older than the copy is skipped; one whose
// prev_id the copy has not seen, the first one, and every signing key update mark the copy
// stale, and it is fetched again through /user/devices), commits it, and then announces the
// change on OutputKeyChangeEvent, so that local users sharing a room with the remote user
// see it in device_lists.changed and read the new list. A redelivered device list update is
// announced again at the stream ID it got the first time.
const TopicInputDeviceListUpdate = "InputDeviceListUpdate"

// InputDeviceListUpdate is one EDU from Origin: DeviceList for m.device_list_update,
// SigningKeys for m.signing_key_update (its content as received).
type InputDeviceListUpdate struct {
	Origin      string            `json:"origin"`
	DeviceList  *DeviceListUpdate `json:"device_list,omitempty"`
	SigningKeys json.RawMessage   `json:"signing_keys,omitempty"`
	// UserID is the user both kinds are about.
	UserID string `json:"user_id"`
}

// DeviceListUpdate is the content of m.device_list_update.
type DeviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id,omitempty"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// DeviceListInputAPI is what the federationapi uses to hand device list EDUs to the
// userapi.
type DeviceListInputAPI interface {
	InputDeviceListUpdate(ctx context.Context, ev *InputDeviceListUpdate) error
}

// DeviceListProducer implements DeviceListInputAPI by appending to
// TopicInputDeviceListUpdate.
type DeviceListProducer struct {
	Log   eventlog.Log
	Topic string // the full topic name, with the configured prefix
}

// InputDeviceListUpdate appends ev, keyed by its user ID.
func (p *DeviceListProducer) InputDeviceListUpdate(ctx context.Context, ev *InputDeviceListUpdate) error {
	return eventlog.ProduceJSON(ctx, p.Log, p.Topic, ev.UserID, ev)
}
