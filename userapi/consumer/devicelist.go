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

	"github.com/matrix-org/dendrite/internal/e2ekeys"
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
	// Stale is told of each user whose cached device list an update marked stale (nil:
	// nobody), so that it is fetched again. It must not block.
	Stale func(userID string)
}

// Prepare implements eventlog.Consumer.Prepare: each update is applied to the cache of the
// remote user's device list, in a transaction of its own that commits before the change is
// announced (a local client told of the change reads the new list), and takes a new stream
// ID for its user. The returned function announces the changes inside the consumer's
// transaction, which saves the offset. A redelivered device list update (the stream ID the
// cache holds) is announced again at the stream ID it got the first time, which readers
// already hold; an older one is skipped.
func (c *DeviceLists) Prepare(ctx context.Context, recs []eventlog.Record) (func(ctx context.Context, tx *sql.Tx) error, error) {
	var msgs []eventlog.Message
	for _, rec := range recs {
		var in api.InputDeviceListUpdate
		if err := json.Unmarshal(rec.Value, &in); err != nil {
			return nil, fmt.Errorf("decode device list update: %w", err)
		}
		out, err := c.apply(ctx, &in)
		if err != nil {
			return nil, err
		}
		if out == nil {
			continue
		}
		b, err := json.Marshal(out)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, eventlog.Message{Key: []byte(in.UserID), Value: b})
	}
	return func(ctx context.Context, _ *sql.Tx) error {
		return eventlog.ProduceFromHandler(ctx, c.Log, c.KeyChangeTopic, msgs)
	}, nil
}

// apply records one update in the cache of the remote user's device list and returns its
// announcement (nil for a redelivery). An update that shows the cache missed a change
// marks the list stale and asks for a resync.
func (c *DeviceLists) apply(ctx context.Context, in *api.InputDeviceListUpdate) (*api.OutputKeyChangeEvent, error) {
	switch {
	case in.DeviceList != nil:
		dl := in.DeviceList
		if dl.UserID != in.UserID || dl.StreamID <= 0 {
			return nil, errors.New("device list update without its user or a stream ID")
		}
		up := &storage.RemoteDeviceUpdate{UserID: in.UserID, StreamID: dl.StreamID, PrevIDs: dl.PrevID, Deleted: dl.Deleted,
			Device: storage.RemoteDevice{DeviceID: dl.DeviceID, DisplayName: dl.DisplayName, JSON: e2ekeys.KeepDeviceKeys(dl.Keys, in.UserID, dl.DeviceID)}}
		stream, stale, err := c.DB.ApplyRemoteDeviceUpdate(ctx, up)
		if err != nil || stream == 0 {
			return nil, retryable(err)
		}
		if stale && c.Stale != nil {
			// After the commit that marked the list stale, so that the fetch replaces it.
			c.Stale(in.UserID)
		}
		return &api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeDeviceKeys, DeviceKeys: &api.DeviceKeyChange{
			UserID: in.UserID, DeviceID: dl.DeviceID, StreamID: stream, DisplayName: dl.DisplayName, Deleted: dl.Deleted, Keys: up.Device.JSON,
		}}, nil
	case in.SigningKeys != nil:
		var keys struct {
			MasterKey      json.RawMessage `json:"master_key"`
			SelfSigningKey json.RawMessage `json:"self_signing_key"`
		}
		if err := json.Unmarshal(in.SigningKeys, &keys); err != nil {
			return nil, fmt.Errorf("decode signing key update: %w", err)
		}
		var held []byte
		if len(keys.MasterKey) == 0 {
			cached, err := c.DB.RemoteDeviceLists(ctx, []string{in.UserID})
			if err != nil {
				return nil, retryable(err)
			}
			if l := cached[in.UserID]; l != nil {
				held = l.MasterKey
			}
		}
		master, selfSigning := e2ekeys.KeepCrossSigningKeys(in.UserID, keys.MasterKey, keys.SelfSigningKey, held)
		stream, err := c.DB.PutRemoteCrossSigningKeys(ctx, in.UserID, master, selfSigning)
		if err != nil {
			return nil, retryable(err)
		}
		return &api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeCrossSigning, CrossSigning: &api.CrossSigningKeyChange{
			UserID: in.UserID, StreamID: stream, MasterKey: master, SelfSigningKey: selfSigning,
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
