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
	p partitions
}

// NewClientData builds the consumer of topic. With replay set it applies the records by
// their numbers and recovers what a wiped log lost from the userapi (uapi.OutputSequence).
func NewClientData(s Shared, topic string, replay uapi.ReplayAPI) *ClientData {
	p := newPartitions(s, topic)
	if replay != nil {
		p.sequenced = uapi.OutputSequence(replay, uapi.TopicOutputClientData).Reporting(s.Logger, s.LogMetrics)
	}
	return &ClientData{p: p}
}

// Run consumes every partition until ctx ends.
func (c *ClientData) Run(ctx context.Context) error {
	return c.p.run(ctx, c.apply)
}

func (c *ClientData) apply(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error) {
	var changes []storage.AccountDataChange
	var dead []storage.DeadLetter
	for _, rec := range recs {
		var out uapi.OutputClientData
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			dead = append(dead, c.p.deadLetter(rec, fmt.Errorf("decode client data: %w", err)))
			continue
		}
		if out.Type != uapi.OutputClientDataTypeAccountData || out.AccountData == nil {
			c.p.logger.WithFields(logrus.Fields{"topic": c.p.topic, "type": out.Type}).Debug("skipping client data of unknown type")
			continue
		}
		ad := out.AccountData
		if ad.UserID == "" || ad.Type == "" || !json.Valid(ad.Content) {
			dead = append(dead, c.p.deadLetter(rec, errors.New("account data without user, type or valid content")))
			continue
		}
		changes = append(changes, storage.AccountDataChange{UserID: ad.UserID, RoomID: ad.RoomID, Type: ad.Type, Content: ad.Content})
	}
	return c.p.db.WriteAccountData(ctx, changes, dead, offset)
}
