package internal

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
)

// roomEventsWait bounds how long the receipt consumer waits for the room events written
// before a batch of receipts to be evaluated.
const roomEventsWait = 10 * time.Second

// Counts announces users' unread counts on OutputNotificationData.
type Counts struct {
	DB storage.Database
	// Outbox numbers and keeps the announcements; it produces them once the consumer's
	// transaction committed (the consumer's Applied wakes it).
	Outbox *eventlog.Outbox
}

// Announce stores, from inside a consumer transaction, the current counts of each room's
// users in the outbox: roomUsers maps a room ID to user IDs. They commit with the change
// that caused them, so no loss of the log takes them back. A record per (user, room), as
// the syncapi applies them, stored together (Outbox.InsertBatch).
func (c *Counts) Announce(ctx context.Context, tx *sql.Tx, roomUsers map[string][]string) error {
	roomIDs := make([]string, 0, len(roomUsers))
	for roomID := range roomUsers {
		roomIDs = append(roomIDs, roomID)
	}
	sort.Strings(roomIDs)
	var recs []eventlog.OutboxRecord
	for _, roomID := range roomIDs {
		counts, err := c.DB.UnreadCounts(ctx, tx, roomID, roomUsers[roomID])
		if err != nil {
			return eventlog.Retry(err)
		}
		for _, userID := range roomUsers[roomID] {
			out := api.OutputNotificationData{UserID: userID, RoomID: roomID, Threads: counts[userID]}
			recs = append(recs, eventlog.OutboxRecord{Key: userID, Payload: func(seq int64) ([]byte, error) {
				out.Seq = seq
				return json.Marshal(out)
			}})
		}
	}
	if err := c.Outbox.InsertBatch(ctx, tx, recs); err != nil {
		return eventlog.Retry(err)
	}
	return nil
}

// QueryOutputRecords implements api.ReplayAPI from the outbox.
func (c *Counts) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	recs, last, err := c.Outbox.Records(ctx, req.Partition, req.AfterSeq, req.Limit)
	if err != nil {
		return nil, err
	}
	return &api.QueryOutputRecordsResponse{Records: recs, LastSeq: last}, nil
}

// ByRoom groups the notifications' users by room, each user once.
func ByRoom(ns []storage.Notification) map[string][]string {
	seen := map[[2]string]bool{}
	out := map[string][]string{}
	for _, n := range ns {
		if k := [2]string{n.RoomID, n.UserID}; !seen[k] {
			seen[k] = true
			out[n.RoomID] = append(out[n.RoomID], n.UserID)
		}
	}
	return out
}

// Receipts is the push server's OutputReceiptEvent consumer: a read receipt (public or
// private) of a local user marks the notifications it covers read, and the new counts
// are announced.
type Receipts struct {
	DB         storage.Database
	Counts     *Counts
	ServerName string
	// RoomEvents is the progress of the push reader, which must have seen the receipted
	// event.
	RoomEvents *eventlog.Progress
	// Read, if set, is called inside the transaction with the (room, user) pairs whose
	// counts dropped.
	Read func(ctx context.Context, tx *sql.Tx, roomUsers map[string][]string) error
}

// Prepare implements eventlog.Consumer.Prepare.
func (r *Receipts) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	var receipts []receiptapi.OutputReceiptEvent
	for _, rec := range recs {
		var o receiptapi.OutputReceiptEvent
		if err := json.Unmarshal(rec.Value, &o); err != nil {
			return eventlog.Step{}, eventlog.Poison(fmt.Errorf("decode receipt: %w", err))
		}
		if (o.Type == receiptapi.ReceiptRead || o.Type == receiptapi.ReceiptReadPrivate) && strings.HasSuffix(o.UserID, ":"+r.ServerName) {
			receipts = append(receipts, o)
		}
	}
	if len(receipts) == 0 {
		return eventlog.Step{}, nil
	}
	if err := r.RoomEvents.CatchUp(ctx, roomEventsWait); err != nil && !errors.Is(err, eventlog.ErrBehind) {
		return eventlog.Step{}, eventlog.Retry(err)
	}
	return eventlog.Step{Apply: func(ctx context.Context, tx *sql.Tx) error { return r.apply(ctx, tx, receipts) }}, nil
}

func (r *Receipts) apply(ctx context.Context, tx *sql.Tx, receipts []receiptapi.OutputReceiptEvent) error {
	var read []storage.Notification
	for _, o := range receipts {
		pos, ok, err := r.DB.EventPosition(ctx, tx, o.EventID)
		if err != nil {
			return eventlog.Retry(err)
		}
		if !ok {
			continue
		}
		changed, err := r.DB.MarkRead(ctx, tx, o.UserID, o.RoomID, o.ThreadID, pos)
		if err != nil {
			return eventlog.Retry(err)
		}
		if changed {
			read = append(read, storage.Notification{UserID: o.UserID, RoomID: o.RoomID})
		}
	}
	if len(read) == 0 {
		return nil
	}
	roomUsers := ByRoom(read)
	if err := r.Counts.Announce(ctx, tx, roomUsers); err != nil {
		return err
	}
	if r.Read != nil {
		return r.Read(ctx, tx, roomUsers)
	}
	return nil
}
