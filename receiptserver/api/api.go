// Package api is the receiptserver's contract: the receipt topics it reads and writes, their
// payloads, and the producer writers use to submit receipts.
package api

import (
	"context"
	"encoding/json"

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

// QueryOutputRecordsRequest asks for the OutputReceiptEvent records of one partition
// numbered above AfterSeq, at most Limit of them (default and cap 500).
type QueryOutputRecordsRequest struct {
	Partition int32 `json:"partition"`
	AfterSeq  int64 `json:"after_seq"`
	Limit     int   `json:"limit,omitempty"`
}

// QueryOutputRecordsResponse holds the records, in number order, exactly as they were
// produced (each with its Seq), and the partition's last number.
type QueryOutputRecordsResponse struct {
	Records []json.RawMessage `json:"records"`
	LastSeq int64             `json:"last_seq"`
}

// ReplayAPI is how readers of OutputReceiptEvent recover what a wiped or truncated log
// lost: the receiptserver's outbox is the truth, the log a copy of it. Records older than
// receipt_server.output_replay_window are gone: asking for them is 404 M_NOT_FOUND.
type ReplayAPI interface {
	QueryOutputRecords(ctx context.Context, req *QueryOutputRecordsRequest) (*QueryOutputRecordsResponse, error)
}

// OutputSequence is how a reader applies OutputReceiptEvent by the records' Seq and fetches
// what its log lost from r (see eventlog.Sequenced and eventlog.Guard).
func OutputSequence(r ReplayAPI) *eventlog.Sequenced {
	return eventlog.OwnerSequenced(func(ctx context.Context, partition int32, after int64, limit int) ([]json.RawMessage, int64, error) {
		res, err := r.QueryOutputRecords(ctx, &QueryOutputRecordsRequest{Partition: partition, AfterSeq: after, Limit: limit})
		if err != nil {
			return nil, 0, err
		}
		return res.Records, res.LastSeq, nil
	}, eventlog.HTTPNotFound)
}
