// Package consumer applies the topic the userapi reads, InputDeviceListUpdate: other
// servers' device list and signing key updates, which it records and announces on
// OutputKeyChangeEvent.
package consumer

import (
	"context"
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
	// Announcement makes the outbox record announcing a change of userID's cached list on
	// OutputKeyChangeEvent, stored with the change; Announce produces the stored records
	// once the change is committed (the userapi's outbox, which retries what fails).
	Announcement func(userID string, change func(stream int64) *api.OutputKeyChangeEvent) storage.Announcement[int64]
	Announce     func(ctx context.Context)
	// Stale is told of each user whose cached device list an update marked stale (nil:
	// nobody), so that it is fetched again. It must not block.
	Stale func(userID string)
}

// Prepare implements eventlog.Consumer.Prepare: each update is applied to the cache of the
// remote user's device list in a transaction of its own, which takes a new stream ID for
// its user and stores the change's announcement in the outbox; the announcements are
// produced once it committed (a local client told of the change reads the new list). A
// redelivered device list update (the stream ID the cache holds) changes and announces
// nothing: its announcement was stored with it the first time; an older one is skipped.
// The returned Step has nothing left to do in the consumer's transaction, which saves the
// offset.
func (c *DeviceLists) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	for _, rec := range recs {
		var in api.InputDeviceListUpdate
		if err := json.Unmarshal(rec.Value, &in); err != nil {
			return eventlog.Step{}, eventlog.Poison(fmt.Errorf("decode device list update: %w", err))
		}
		if err := c.apply(ctx, &in); err != nil {
			return eventlog.Step{}, err
		}
	}
	if len(recs) > 0 {
		c.Announce(ctx)
	}
	return eventlog.Step{}, nil
}

// apply records one update in the cache of the remote user's device list with its
// announcement. An update that shows the cache missed a change marks the list stale and
// asks for a resync.
func (c *DeviceLists) apply(ctx context.Context, in *api.InputDeviceListUpdate) error {
	switch {
	case in.DeviceList != nil:
		dl := in.DeviceList
		if dl.UserID != in.UserID || dl.StreamID <= 0 {
			return errors.New("device list update without its user or a stream ID")
		}
		up := &storage.RemoteDeviceUpdate{UserID: in.UserID, StreamID: dl.StreamID, PrevIDs: dl.PrevID, Deleted: dl.Deleted,
			Device: storage.RemoteDevice{DeviceID: dl.DeviceID, DisplayName: dl.DisplayName, JSON: e2ekeys.KeepDeviceKeys(dl.Keys, in.UserID, dl.DeviceID)}}
		_, stale, err := c.DB.ApplyRemoteDeviceUpdate(ctx, up, c.Announcement(in.UserID, func(stream int64) *api.OutputKeyChangeEvent {
			return &api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeDeviceKeys, DeviceKeys: &api.DeviceKeyChange{
				UserID: in.UserID, DeviceID: dl.DeviceID, StreamID: stream, DisplayName: dl.DisplayName, Deleted: dl.Deleted, Keys: up.Device.JSON,
			}}
		}))
		if err != nil {
			return retryable(err)
		}
		if stale && c.Stale != nil {
			// After the commit that marked the list stale, so that the fetch replaces it.
			c.Stale(in.UserID)
		}
		return nil
	case in.SigningKeys != nil:
		var keys struct {
			MasterKey      json.RawMessage `json:"master_key"`
			SelfSigningKey json.RawMessage `json:"self_signing_key"`
		}
		if err := json.Unmarshal(in.SigningKeys, &keys); err != nil {
			return fmt.Errorf("decode signing key update: %w", err)
		}
		var held []byte
		if len(keys.MasterKey) == 0 {
			cached, err := c.DB.RemoteDeviceLists(ctx, []string{in.UserID})
			if err != nil {
				return retryable(err)
			}
			if l := cached[in.UserID]; l != nil {
				held = l.MasterKey
			}
		}
		master, selfSigning := e2ekeys.KeepCrossSigningKeys(in.UserID, keys.MasterKey, keys.SelfSigningKey, held)
		_, err := c.DB.PutRemoteCrossSigningKeys(ctx, in.UserID, master, selfSigning, c.Announcement(in.UserID, func(stream int64) *api.OutputKeyChangeEvent {
			return &api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeCrossSigning, CrossSigning: &api.CrossSigningKeyChange{
				UserID: in.UserID, StreamID: stream, MasterKey: master, SelfSigningKey: selfSigning,
			}}
		}))
		return retryable(err)
	}
	return errors.New("device list update of no known kind")
}

// retryable marks a storage failure transient (nil stays nil).
func retryable(err error) error {
	if err == nil {
		return nil
	}
	return eventlog.Retry(err)
}
