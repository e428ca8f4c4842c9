package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/syncapi/storage"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// ClientData consumes OutputClientData: account data changes.
type ClientData struct {
	reader
}

// NewClientData builds the consumer of topic. With replay set it applies the records by
// their numbers and recovers what a wiped log lost from the userapi (uapi.OutputSequence).
func NewClientData(s Shared, topic string, replay uapi.ReplayAPI) *ClientData {
	return &ClientData{newReader(s, topic, storage.StreamAccountData, userSequence(replay, uapi.TopicOutputClientData), prepareClientData)}
}

func prepareClientData(_ context.Context, c *reader, recs []eventlog.Record) (writeFunc, error) {
	var changes []storage.AccountDataChange
	for _, rec := range recs {
		var out uapi.OutputClientData
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return nil, eventlog.Poison(fmt.Errorf("decode client data: %w", err))
		}
		if out.Type != uapi.OutputClientDataTypeAccountData || out.AccountData == nil {
			c.logger.WithFields(logrus.Fields{"topic": rec.Topic, "type": out.Type}).Debug("skipping client data of unknown type")
			continue
		}
		ad := out.AccountData
		if ad.UserID == "" || ad.Type == "" || !json.Valid(ad.Content) {
			return nil, eventlog.Poison(errors.New("account data without user, type or valid content"))
		}
		changes = append(changes, storage.AccountDataChange{UserID: ad.UserID, RoomID: ad.RoomID, Type: ad.Type, Content: ad.Content})
	}
	return func(ctx context.Context, offset storage.Offset) (*storage.Applied, error) {
		return c.db.WriteAccountData(ctx, changes, offset)
	}, nil
}

// KeyChanges consumes OutputKeyChangeEvent: users whose device or cross-signing keys
// changed; both are a change of the user's device list. A deleted device's sliding sync
// connections are forgotten with it.
type KeyChanges struct {
	reader
}

// NewKeyChanges builds the consumer of topic. With replay set it applies the records by
// their numbers and recovers what a wiped log lost from the userapi (uapi.OutputSequence).
func NewKeyChanges(s Shared, topic string, replay uapi.ReplayAPI) *KeyChanges {
	return &KeyChanges{newReader(s, topic, storage.StreamKeyChanges, userSequence(replay, uapi.TopicOutputKeyChangeEvent), prepareKeyChanges)}
}

func prepareKeyChanges(_ context.Context, c *reader, recs []eventlog.Record) (writeFunc, error) {
	var changes []storage.KeyChange
	for _, rec := range recs {
		var out uapi.OutputKeyChangeEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return nil, eventlog.Poison(fmt.Errorf("decode key change: %w", err))
		}
		var change storage.KeyChange
		switch {
		case out.Type == uapi.OutputKeyChangeTypeDeviceKeys && out.DeviceKeys != nil:
			change = storage.KeyChange{UserID: out.DeviceKeys.UserID, StreamID: out.DeviceKeys.StreamID}
			if out.DeviceKeys.Deleted {
				change.DeletedDevice = out.DeviceKeys.DeviceID
			}
		case out.Type == uapi.OutputKeyChangeTypeCrossSigning && out.CrossSigning != nil:
			change = storage.KeyChange{UserID: out.CrossSigning.UserID, StreamID: out.CrossSigning.StreamID, NotifyOnly: out.CrossSigning.NotifyOnly}
		default:
			c.logger.WithFields(logrus.Fields{"topic": rec.Topic, "type": out.Type}).Debug("skipping key change of unknown type")
			continue
		}
		if change.UserID == "" {
			return nil, eventlog.Poison(errors.New("key change without a user"))
		}
		changes = append(changes, change)
	}
	return func(ctx context.Context, offset storage.Offset) (*storage.Applied, error) {
		return c.db.WriteKeyChanges(ctx, changes, offset)
	}, nil
}
