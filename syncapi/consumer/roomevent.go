package consumer

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// RoomEvents consumes OutputRoomEvent: it stores each new event with its state delta, and
// each backfilled event as history before everything stored.
// Added state events the roomserver did not carry inline are fetched with QueryEventsByID
// before the write transaction opens, so no query to another component holds it open.
type RoomEvents struct {
	p     partitions
	rsAPI rsapi.SyncRoomserverAPI
}

// NewRoomEvents builds the consumer of topic.
func NewRoomEvents(s Shared, topic string, rs rsapi.SyncRoomserverAPI) *RoomEvents {
	p := newPartitions(s, topic)
	p.sequenced = rsapi.OutputSequence(rs).Reporting(s.Logger, s.LogMetrics)
	return &RoomEvents{p: p, rsAPI: rs}
}

// Run consumes every partition until ctx ends.
func (c *RoomEvents) Run(ctx context.Context) error {
	return c.p.run(ctx, c.apply)
}

func (c *RoomEvents) apply(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error) {
	var events []storage.NewRoomEvent
	var dead []storage.DeadLetter
	for _, rec := range recs {
		var out rsapi.OutputRoomEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			dead = append(dead, c.p.deadLetter(rec, fmt.Errorf("decode output room event: %w", err)))
			continue
		}
		if out.Type == rsapi.OutputTypeBackfilledEvent && out.BackfilledEvent != nil && out.BackfilledEvent.Event.PDU != nil {
			b := out.BackfilledEvent
			events = append(events, storage.NewRoomEvent{Event: b.Event.PDU, HistoryVisibility: b.HistoryVisibility, RedactsEventID: b.RedactsEventID, Backfilled: true})
			continue
		}
		if out.Type != rsapi.OutputTypeNewRoomEvent || out.NewRoomEvent == nil || out.NewRoomEvent.Event.PDU == nil {
			c.p.logger.WithFields(logrus.Fields{"topic": c.p.topic, "type": out.Type}).Debug("skipping output of unknown type")
			continue
		}
		ev, err := c.prepare(ctx, out.NewRoomEvent)
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	return c.p.db.WriteRoomEvents(ctx, events, dead, offset)
}

// prepare resolves every added state event, fetching those not carried inline.
func (c *RoomEvents) prepare(ctx context.Context, out *rsapi.OutputNewRoomEvent) (storage.NewRoomEvent, error) {
	ev := storage.NewRoomEvent{
		Event: out.Event.PDU, RemovesStateEventIDs: out.RemovesStateEventIDs,
		HistoryVisibility: out.HistoryVisibility, RedactsEventID: out.RedactsEventID,
	}
	if out.TxnID != nil {
		ev.Txn = &storage.Txn{UserID: out.TxnID.UserID, DeviceID: out.TxnID.DeviceID, TxnID: out.TxnID.TransactionID}
	}
	added, unknown, err := out.AddedState(ctx, c.rsAPI)
	if err != nil {
		return ev, err
	}
	for _, id := range unknown {
		c.p.logger.WithFields(logrus.Fields{"room_id": out.Event.RoomID().String(), "event_id": id}).Warn("added state event unknown to the roomserver; skipped")
	}
	ev.AddsState = added
	return ev, nil
}
