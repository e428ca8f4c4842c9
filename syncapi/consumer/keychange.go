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

// KeyChanges consumes OutputKeyChangeEvent: users whose device or cross-signing keys
// changed; both are a change of the user's device list. A deleted device's sliding sync
// connections are forgotten with it.
type KeyChanges struct {
	p partitions
}

// NewKeyChanges builds the consumer of topic. With replay set it applies the records by
// their numbers and recovers what a wiped log lost from the userapi (uapi.OutputSequence).
func NewKeyChanges(s Shared, topic string, replay uapi.ReplayAPI) *KeyChanges {
	p := newPartitions(s, topic)
	if replay != nil {
		p.sequenced = uapi.OutputSequence(replay, uapi.TopicOutputKeyChangeEvent).Reporting(s.Logger, s.LogMetrics)
	}
	return &KeyChanges{p: p}
}

// Run consumes every partition until ctx ends.
func (c *KeyChanges) Run(ctx context.Context) error {
	return c.p.run(ctx, c.apply)
}

func (c *KeyChanges) apply(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error) {
	var changes []storage.KeyChange
	var dead []storage.DeadLetter
	for _, rec := range recs {
		var out uapi.OutputKeyChangeEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			dead = append(dead, c.p.deadLetter(rec, fmt.Errorf("decode key change: %w", err)))
			continue
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
			c.p.logger.WithFields(logrus.Fields{"topic": c.p.topic, "type": out.Type}).Debug("skipping key change of unknown type")
			continue
		}
		if change.UserID == "" {
			dead = append(dead, c.p.deadLetter(rec, errors.New("key change without a user")))
			continue
		}
		changes = append(changes, change)
	}
	return c.p.db.WriteKeyChanges(ctx, changes, dead, offset)
}
