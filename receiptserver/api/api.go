// Package api is the receiptserver's contract: the receipt topics it reads and writes, their
// payloads, and the producer writers use to submit receipts.
package api

import (
	"context"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// TopicInputReceipt carries receipts users send.
//
// Producer: clientapi (and federationapi), through Producer. Key: room ID. Ordering: per
// room, applied in log order. Payload: InputReceiptEvent, version 1. The receiptserver keeps
// each (room, user, type, thread) receipt and moves it only forward, by event depth. The
// clientapi learns that a receipt was taken through TakenAPI (Producer.Wait) before it
// acknowledges it: a receipt lost with the log was never acknowledged, and the client's
// retry is taken then. A federated m.receipt is not waited for (EDUs are best effort).
const TopicInputReceipt = "InputReceipt"

// TopicOutputReceiptEvent carries every receipt that moved.
//
// Producer: receiptserver, after it stored the move. Key: room ID. Ordering: per room, the
// order the receiptserver applied the moves. Payload: OutputReceiptEvent, version 1.
// Delivery is at least once: readers upsert by (room, user, type, thread), so redelivery
// changes nothing. Private receipts (ReceiptReadPrivate) are for the receipt's user only.
//
// Every record carries Seq, its number in its partition (dense from 1), given in the
// transaction that stores the move. The log is not the source of truth: the receiptserver
// keeps the records in its outbox for receipt_server.output_replay_window, and readers
// apply them with OutputSequence, which skips records at or below the last Seq they
// applied and fetches what a gap or a wiped log lost from QueryOutputRecords.
const TopicOutputReceiptEvent = "OutputReceiptEvent"

// Receipt types a client may send.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
)

// InputReceiptEvent is a user's receipt for EventID. Depth is the event's depth, which the
// writer learned when it checked that the event exists in the room.
type InputReceiptEvent struct {
	RoomID  string `json:"room_id"`
	UserID  string `json:"user_id"`
	Type    string `json:"type"`
	EventID string `json:"event_id"`
	// ThreadID is "" for an unthreaded receipt, "main" for the main timeline, or a
	// thread root's event ID.
	ThreadID string `json:"thread_id,omitempty"`
	Depth    int64  `json:"depth"`
	// TS is when the receipt was sent, in Unix milliseconds.
	TS int64 `json:"ts"`
	// InputID, set by a writer that waits for the receipt to be taken
	// (QueryInputTaken), names this input; "" for writers that do not wait.
	InputID string `json:"input_id,omitempty"`
}

// OutputReceiptEvent is a receipt that moved forward.
type OutputReceiptEvent struct {
	// Seq is the record's number in its partition (see TopicOutputReceiptEvent); 0 on
	// records written before numbers existed.
	Seq      int64  `json:"seq,omitempty"`
	RoomID   string `json:"room_id"`
	UserID   string `json:"user_id"`
	Type     string `json:"type"`
	EventID  string `json:"event_id"`
	ThreadID string `json:"thread_id,omitempty"`
	TS       int64  `json:"ts"`
}

// InputAPI is what writers use to submit receipts.
type InputAPI interface {
	InputReceipt(ctx context.Context, ev *InputReceiptEvent) error
}

// Producer implements InputAPI by appending to the receiptserver's input topic.
type Producer struct {
	Log   eventlog.Log
	Topic string // full topic name, with the configured prefix
	// Wait, when set, makes InputReceipt return only once the receiptserver has taken the
	// receipt (QueryInputTaken): it is then stored, with its announcement in the
	// receiptserver's outbox, which no loss of the log can take back, so a 200 to the
	// client is durable. Without it the receipt is only in the log.
	Wait TakenAPI
	// Timeout bounds that wait (receipt_server.input_wait_timeout); 0 waits as long as
	// ctx allows. When it expires the receipt stays in the log and will be taken: the
	// caller gets eventlog.ErrInputTimeout and may retry, which announces nothing twice
	// (a receipt only moves forward).
	Timeout time.Duration
}

// InputReceipt appends ev to the input topic and, with Wait, waits until the receiptserver
// has taken it.
func (p *Producer) InputReceipt(ctx context.Context, ev *InputReceiptEvent) error {
	in := *ev
	w := eventlog.TakenInput{Wait: p.Wait, Timeout: p.Timeout}
	if err := w.Produce(ctx, p.Log, p.Topic, in.RoomID, &in, func(id string) { in.InputID = id }); err != nil {
		return fmt.Errorf("receipt in %s: %w", in.RoomID, err)
	}
	return nil
}

// QueryInputTakenRequest names one receipt a writer produced by its InputID.
type QueryInputTakenRequest = eventlog.QueryInputTakenRequest

// QueryInputTakenResponse says that the receipt was taken.
type QueryInputTakenResponse = eventlog.QueryInputTakenResponse

// TakenAPI is how writers learn that the receiptserver took a receipt they produced
// (read-your-writes, DESIGN.md 5): its move, if any, and the move's announcement are
// committed together with the receipt's InputID.
type TakenAPI = eventlog.TakenAPI

// ServerAPI is everything the receiptserver serves to other components.
type ServerAPI interface {
	ReplayAPI
	TakenAPI
}

// QueryOutputRecordsRequest asks for the OutputReceiptEvent records of one partition.
type QueryOutputRecordsRequest = eventlog.QueryOutputRecordsRequest

// QueryOutputRecordsResponse holds OutputReceiptEvent records as they were produced.
type QueryOutputRecordsResponse = eventlog.QueryOutputRecordsResponse

// ReplayAPI is how readers of OutputReceiptEvent recover what a wiped or truncated log lost.
type ReplayAPI = eventlog.ReplayAPI

// OutputSequence is how a reader applies OutputReceiptEvent by the records' Seq and fetches what
// its log lost from r (see eventlog.Sequenced and eventlog.Guard).
func OutputSequence(r ReplayAPI) *eventlog.Sequenced {
	return eventlog.ReplaySequenced(r)
}
