// Package api is the receiptserver's contract: the receipt topics it reads and writes, their
// payloads, and the producer writers use to submit receipts.
package api

import (
	"context"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// TopicInputReceipt carries receipts users send.
//
// Producer: clientapi (and federationapi), through Producer. Key: room ID. Ordering: per
// room, applied in log order. Payload: InputReceiptEvent, version 1. The receiptserver keeps
// each (room, user, type, thread) receipt and moves it only forward, by event depth.
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
}

// InputReceipt appends ev to the input topic.
func (p *Producer) InputReceipt(ctx context.Context, ev *InputReceiptEvent) error {
	return eventlog.ProduceJSON(ctx, p.Log, p.Topic, ev.RoomID, ev)
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
