// Package internal is the receiptserver's logic: receipts move only forward, and every move
// is announced.
package internal

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/receiptserver/api"
	"github.com/matrix-org/dendrite/receiptserver/storage"
)

// Receipts is the Handle of the receiptserver's eventlog.Consumer. The moves commit with the
// offset and with their announcements, numbered in the outbox; the outbox produces them once
// committed (the consumer's Applied wakes it), so no loss of the log takes a move back.
// Each receipt's InputID is recorded as taken in the same transaction, for the writer that
// waits for it.
type Receipts struct {
	DB     storage.Database
	Outbox *eventlog.Outbox
	Taken  *eventlog.Taken
}

// Handle implements eventlog.Consumer.Handle.
func (r *Receipts) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	for _, rec := range recs {
		var in api.InputReceiptEvent
		if err := json.Unmarshal(rec.Value, &in); err != nil {
			return fmt.Errorf("decode receipt input: %w", err)
		}
		if in.RoomID == "" || in.UserID == "" || in.EventID == "" || (in.Type != api.ReceiptRead && in.Type != api.ReceiptReadPrivate) {
			return errors.New("receipt input without room, user, event or a known type")
		}
		if err := r.Taken.Take(ctx, tx, in.InputID); err != nil {
			return eventlog.Retry(err)
		}
		moved, err := r.DB.MoveReceipt(ctx, tx, &storage.Receipt{RoomID: in.RoomID, UserID: in.UserID, Type: in.Type,
			ThreadID: in.ThreadID, EventID: in.EventID, Depth: in.Depth, TS: in.TS})
		if err != nil {
			return eventlog.Retry(err)
		}
		if !moved {
			continue
		}
		out := api.OutputReceiptEvent{RoomID: in.RoomID, UserID: in.UserID, Type: in.Type, EventID: in.EventID, ThreadID: in.ThreadID, TS: in.TS}
		if err = r.Outbox.Insert(ctx, tx, in.RoomID, func(seq int64) ([]byte, error) {
			out.Seq = seq
			return json.Marshal(out)
		}); err != nil {
			return eventlog.Retry(err)
		}
	}
	return nil
}

// QueryOutputRecords implements api.ReplayAPI from the outbox.
func (r *Receipts) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	recs, last, err := r.Outbox.Records(ctx, req.Partition, req.AfterSeq, req.Limit)
	if err != nil {
		return nil, err
	}
	return &api.QueryOutputRecordsResponse{Records: recs, LastSeq: last}, nil
}

// QueryInputTaken implements api.TakenAPI.
func (r *Receipts) QueryInputTaken(ctx context.Context, req *api.QueryInputTakenRequest) (*api.QueryInputTakenResponse, error) {
	return r.Taken.QueryInputTaken(ctx, req)
}
