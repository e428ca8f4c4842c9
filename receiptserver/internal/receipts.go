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
// offset; their announcements are written before the commit, so a crash in between announces
// them again, which readers (upserting) ignore.
type Receipts struct {
	DB          storage.Database
	Log         eventlog.Log
	OutputTopic string
}

// Handle implements eventlog.Consumer.Handle.
func (r *Receipts) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	var msgs []eventlog.Message
	for _, rec := range recs {
		var in api.InputReceiptEvent
		if err := json.Unmarshal(rec.Value, &in); err != nil {
			return fmt.Errorf("decode receipt input: %w", err)
		}
		if in.RoomID == "" || in.UserID == "" || in.EventID == "" || (in.Type != api.ReceiptRead && in.Type != api.ReceiptReadPrivate) {
			return errors.New("receipt input without room, user, event or a known type")
		}
		moved, err := r.DB.MoveReceipt(ctx, tx, &storage.Receipt{RoomID: in.RoomID, UserID: in.UserID, Type: in.Type,
			ThreadID: in.ThreadID, EventID: in.EventID, Depth: in.Depth, TS: in.TS})
		if err != nil {
			return eventlog.Retry(err)
		}
		if !moved {
			continue
		}
		value, err := json.Marshal(api.OutputReceiptEvent{RoomID: in.RoomID, UserID: in.UserID, Type: in.Type, EventID: in.EventID,
			ThreadID: in.ThreadID, TS: in.TS})
		if err != nil {
			return err
		}
		msgs = append(msgs, eventlog.Message{Key: []byte(in.RoomID), Value: value})
	}
	return eventlog.ProduceFromHandler(ctx, r.Log, r.OutputTopic, msgs)
}
