package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// TopicOutputRoomEvent is the topic the roomserver writes every accepted room event to.
//
// Producer: roomserver (the shard owning the room), after the event is durably stored.
// Key: room ID. Ordering: per room, the order in which the roomserver applied the events,
// which is a valid topological order.
// Payload: OutputRoomEvent, version 1. Delivery is at least once (the roomserver re-sends
// what it stored but had not yet produced after a crash): consumers dedupe by event ID.
// Consumers must skip unknown types.
//
// Every record carries Seq, the roomserver's durable number of the record in its partition
// (dense from 1, assigned in the transaction that stores the event). The log is not the
// source of truth: a reader stores the last Seq it applied with its data, skips records at
// or below it, and when it sees a gap, or the log was reset (eventlog.Guard), fetches the
// missing records from QueryOutputRecords on the roomserver, which keeps them for
// room_server.output_replay_window.
const TopicOutputRoomEvent = "OutputRoomEvent"

// OutputSequence is how a reader applies TopicOutputRoomEvent by the records' Seq and
// fetches what its log lost from r (see eventlog.Sequenced and eventlog.Guard).
func OutputSequence(r ReplayAPI) *eventlog.Sequenced {
	return eventlog.OwnerSequenced(func(ctx context.Context, partition int32, after int64, limit int) ([]json.RawMessage, int64, error) {
		res, err := r.QueryOutputRecords(ctx, &QueryOutputRecordsRequest{Partition: partition, AfterSeq: after, Limit: limit})
		if err != nil {
			return nil, 0, err
		}
		return res.Records, res.LastSeq, nil
	}, func(err error) bool {
		var merr *matrixerr.Error
		return errors.As(err, &merr) && merr.Status == http.StatusNotFound
	})
}

// OutputType says which body of OutputRoomEvent is set.
type OutputType string

const (
	// OutputTypeNewRoomEvent carries NewRoomEvent.
	OutputTypeNewRoomEvent OutputType = "new_room_event"
	// OutputTypeBackfilledEvent carries BackfilledEvent.
	OutputTypeBackfilledEvent OutputType = "backfilled_event"
)

// OutputRoomEvent is the envelope of the OutputRoomEvent topic.
type OutputRoomEvent struct {
	// Seq is the record's number in its partition (see TopicOutputRoomEvent); 0 on records
	// written before sequences existed.
	Seq          int64               `json:"seq,omitempty"`
	Type         OutputType          `json:"type"`
	NewRoomEvent *OutputNewRoomEvent `json:"new_room_event,omitempty"`
	// BackfilledEvent is set for OutputTypeBackfilledEvent.
	BackfilledEvent *OutputBackfilledEvent `json:"backfilled_event,omitempty"`
}

// OutputBackfilledEvent is an event older than the room's known timeline, fetched from
// another server (api.KindBackfilled). It changed no current state and no forward
// extremity. The backfilled events of one input message are written newest first, after
// every event already output for the room: a reader keeps them as history, ordered before
// everything it has (each one before the previous one). Readers that only follow the room
// forward (the federationsender) skip them.
type OutputBackfilledEvent struct {
	Event Event `json:"event"`
	// HistoryVisibility is the room's history visibility in the state before Event.
	HistoryVisibility string `json:"history_visibility"`
	// RedactsEventID is set when Event is a redaction the roomserver applied to an event
	// it had: readers redact their copy too.
	RedactsEventID string `json:"redacts_event_id,omitempty"`
}

// OutputNewRoomEvent is an event newly placed in a room, with the change it made to the
// room's current state. It never carries the full room state.
type OutputNewRoomEvent struct {
	Event Event `json:"event"`
	// AddsStateEventIDs and RemovesStateEventIDs are the change to current state. They
	// include Event's own ID when it is a state event that became current. Added events
	// other than Event itself are in AddsStateEvents when the roomserver had them at hand;
	// readers fetch any others with QueryEventsByID.
	AddsStateEventIDs    []string `json:"adds_state_event_ids,omitempty"`
	RemovesStateEventIDs []string `json:"removes_state_event_ids,omitempty"`
	AddsStateEvents      []Event  `json:"adds_state_events,omitempty"`
	// HistoryVisibility is the room's history visibility in the state before Event.
	HistoryVisibility string `json:"history_visibility"`
	// TxnID is the sender's transaction for local events sent with one.
	TxnID *TransactionID `json:"txn_id,omitempty"`
	// RedactsEventID is set when Event is a redaction the roomserver applied: readers
	// redact their copy of that event.
	RedactsEventID string `json:"redacts_event_id,omitempty"`
}

// AddedState returns the events of AddsStateEventIDs, in that order: those carried inline,
// the others fetched from q in one query. IDs the roomserver does not know come back in
// unknown (the reader logs and skips them).
func (o *OutputNewRoomEvent) AddedState(ctx context.Context, q QueryAPI) (added []gomatrixserverlib.PDU, unknown []string, err error) {
	have := map[string]gomatrixserverlib.PDU{o.Event.EventID(): o.Event.PDU}
	for _, e := range o.AddsStateEvents {
		if e.PDU != nil {
			have[e.EventID()] = e.PDU
		}
	}
	var missing []string
	for _, id := range o.AddsStateEventIDs {
		if have[id] == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		roomID := o.Event.RoomID().String()
		res, err := q.QueryEventsByID(ctx, &QueryEventsByIDRequest{RoomID: roomID, EventIDs: missing})
		if err != nil {
			return nil, nil, fmt.Errorf("fetch added state of %s: %w", roomID, err)
		}
		for _, e := range res.Events {
			have[e.EventID()] = e.PDU
		}
	}
	added = make([]gomatrixserverlib.PDU, 0, len(o.AddsStateEventIDs))
	for _, id := range o.AddsStateEventIDs {
		if have[id] == nil {
			unknown = append(unknown, id)
			continue
		}
		added = append(added, have[id])
	}
	return added, unknown, nil
}
