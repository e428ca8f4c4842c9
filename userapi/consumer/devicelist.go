// Package consumer applies the topic the userapi reads, InputDeviceListUpdate: other
// servers' device list and signing key updates, which it records and announces on
// OutputKeyChangeEvent.
package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// DeviceLists consumes InputDeviceListUpdate.
type DeviceLists struct {
	DB storage.Database
	// Log and KeyChangeTopic receive the announcements.
	Log            eventlog.Log
	KeyChangeTopic string
}

// Handle implements eventlog.Consumer.Handle: each update takes a new stream ID for its user
// in tx (a device list update already recorded is skipped) and is announced as that user's
// key change. A failed batch is retried whole; a repeated announcement carries a stream ID
// the readers already hold.
func (c *DeviceLists) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	var msgs []eventlog.Message
	for _, rec := range recs {
		var in api.InputDeviceListUpdate
		if err := json.Unmarshal(rec.Value, &in); err != nil {
			return fmt.Errorf("decode device list update: %w", err)
		}
		out, err := c.apply(ctx, tx, &in)
		if err != nil {
			return err
		}
		if out == nil {
			continue
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		msgs = append(msgs, eventlog.Message{Key: []byte(in.UserID), Value: b})
	}
	return eventlog.ProduceFromHandler(ctx, c.Log, c.KeyChangeTopic, msgs)
}

// apply records one update and returns its announcement (nil for a redelivery).
func (c *DeviceLists) apply(ctx context.Context, tx *sql.Tx, in *api.InputDeviceListUpdate) (*api.OutputKeyChangeEvent, error) {
	switch {
	case in.DeviceList != nil:
		dl := in.DeviceList
		if dl.UserID != in.UserID || dl.StreamID <= 0 {
			return nil, errors.New("device list update without its user or a stream ID")
		}
		ok, stream, err := c.DB.RemoteDeviceListChanged(ctx, tx, in.UserID, dl.StreamID)
		if err != nil || !ok {
			return nil, retryable(err)
		}
		return &api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeDeviceKeys, DeviceKeys: &api.DeviceKeyChange{
			UserID: in.UserID, DeviceID: dl.DeviceID, StreamID: stream, DisplayName: dl.DisplayName, Deleted: dl.Deleted, Keys: dl.Keys,
		}}, nil
	case in.SigningKeys != nil:
		var keys struct {
			MasterKey      json.RawMessage `json:"master_key"`
			SelfSigningKey json.RawMessage `json:"self_signing_key"`
		}
		if err := json.Unmarshal(in.SigningKeys, &keys); err != nil {
			return nil, fmt.Errorf("decode signing key update: %w", err)
		}
		_, stream, err := c.DB.RemoteDeviceListChanged(ctx, tx, in.UserID, 0)
		if err != nil {
			return nil, retryable(err)
		}
		return &api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeCrossSigning, CrossSigning: &api.CrossSigningKeyChange{
			UserID: in.UserID, StreamID: stream, MasterKey: keys.MasterKey, SelfSigningKey: keys.SelfSigningKey,
		}}, nil
	}
	return nil, errors.New("device list update of no known kind")
}

// retryable marks a storage failure transient (nil stays nil).
func retryable(err error) error {
	if err == nil {
		return nil
	}
	return eventlog.Retry(err)
}
