package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/syncapi/storage"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// RoomEvents consumes OutputRoomEvent: it stores each new event with its state delta, and
// each backfilled event as history before everything stored.
// Added state events the roomserver did not carry inline are fetched with QueryEventsByID
// before the write transaction opens, so no query to another component holds it open.
// After a batch whose membership changes left other servers' users without a joined room
// shared with a local user has committed, it tells the userapi to mark their cached device
// lists stale: their servers stop sending updates to this one.
type RoomEvents struct {
	c          *eventlog.Consumer
	db         storage.Database
	logger     *logrus.Entry
	rsAPI      rsapi.SyncRoomserverAPI
	keys       uapi.SyncKeyAPI
	serverName string
}

// NewRoomEvents builds the consumer of topic. keys may be nil (no device lists are marked).
func NewRoomEvents(s Shared, topic string, rs rsapi.SyncRoomserverAPI, keys uapi.SyncKeyAPI, serverName string) *RoomEvents {
	re := &RoomEvents{db: s.DB, logger: s.Logger, rsAPI: rs, keys: keys, serverName: serverName}
	re.c = newConsumer(s, topic, storage.StreamRoomEvents, rsapi.OutputSequence(rs), re.prepareBatch, re.afterWrite)
	return re
}

// Run consumes every partition until ctx ends.
func (c *RoomEvents) Run(ctx context.Context) error {
	return c.c.Run(ctx)
}

// prepareBatch decodes the batch and resolves the state its events add, before the write
// transaction opens.
func (c *RoomEvents) prepareBatch(ctx context.Context, recs []eventlog.Record) (writeFunc, error) {
	var events []storage.NewRoomEvent
	for _, rec := range recs {
		var out rsapi.OutputRoomEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return nil, eventlog.Poison(fmt.Errorf("decode output room event: %w", err))
		}
		if out.Type == rsapi.OutputTypeBackfilledEvent && out.BackfilledEvent != nil && out.BackfilledEvent.Event.PDU != nil {
			b := out.BackfilledEvent
			events = append(events, storage.NewRoomEvent{Event: b.Event.PDU, HistoryVisibility: b.HistoryVisibility, RedactsEventID: b.RedactsEventID, Backfilled: true})
			continue
		}
		if out.Type != rsapi.OutputTypeNewRoomEvent || out.NewRoomEvent == nil || out.NewRoomEvent.Event.PDU == nil {
			c.logger.WithFields(logrus.Fields{"topic": rec.Topic, "type": out.Type}).Debug("skipping output of unknown type")
			continue
		}
		ev, err := c.prepare(ctx, out.NewRoomEvent)
		if err != nil {
			return nil, eventlog.Retry(err)
		}
		events = append(events, ev)
	}
	return func(ctx context.Context, offset storage.Offset) (*storage.Applied, error) {
		return c.db.WriteRoomEvents(ctx, events, offset)
	}, nil
}

// afterWrite marks device lists stale once a batch whose membership changes left users of
// other servers without a shared room has committed, before the batch wakes any client.
func (c *RoomEvents) afterWrite(ctx context.Context, applied *storage.Applied) {
	if c.keys != nil && len(applied.Members) > 0 {
		c.markUnshared(ctx, applied.Members)
	}
}

// markStaleRetry is the wait between attempts to mark device lists stale.
const markStaleRetry = time.Second

// markUnshared marks stale the cached device lists of the other servers' users whom changes
// left without a joined room shared with a local user. The batch has committed (a redelivery
// would not report the changes again), so it retries while the partition waits, until it
// succeeds or ctx ends; the lists are marked before the batch's changes wake any client.
func (c *RoomEvents) markUnshared(ctx context.Context, changes []storage.MemberChange) {
	for {
		err := c.tryMarkUnshared(ctx, changes)
		if err == nil {
			return
		}
		c.logger.WithError(err).WithField("topic", c.c.Topic).Warn("marking device lists of users no longer sharing a room stale failed; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(markStaleRetry):
		}
	}
}

func (c *RoomEvents) tryMarkUnshared(ctx context.Context, changes []storage.MemberChange) error {
	users, err := c.db.UnsharedRemoteUsers(ctx, c.serverName, changes)
	if err != nil || len(users) == 0 {
		return err
	}
	_, err = c.keys.PerformMarkRemoteDeviceListsStale(ctx, &uapi.PerformMarkRemoteDeviceListsStaleRequest{UserIDs: users})
	if err != nil {
		return fmt.Errorf("mark device lists stale: %w", err)
	}
	return nil
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
		c.logger.WithFields(logrus.Fields{"room_id": out.Event.RoomID().String(), "event_id": id}).Warn("added state event unknown to the roomserver; skipped")
	}
	ev.AddsState = added
	return ev, nil
}
