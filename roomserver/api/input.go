package api

import (
	"encoding/json"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// TopicInputRoomEvent is the topic writers submit room events to.
//
// Producer: writers (clientapi, federationapi), through Input in this package.
// Key: room ID; partition eventlog.PartitionFor(room ID, P), so one room is one partition.
// Ordering: per room, the roomserver applies messages strictly in log order.
// Payload: InputRoomEvents, version 1. The roomserver applies every event of one message in
// one database transaction and reports a Result per event to whoever waits on the position.
const TopicInputRoomEvent = "InputRoomEvent"

// Kind says how the roomserver must treat an input event.
type Kind string

const (
	// KindNew is a local event: either a ProtoEvent that the roomserver completes (prev_events,
	// auth_events, depth, hashes, signature) while it holds the room's order, or a complete
	// event built by the writer (only the create event of a new room).
	KindNew Kind = "new"
	// KindOutlier is a complete event from another server, stored without being placed in
	// the room's timeline: an auth or state event that later events refer to. It must pass
	// the auth rules against its own auth_events, all of which must already be known.
	KindOutlier Kind = "outlier"
	// KindFederated is a complete event from another server placed in the room's timeline.
	// Its auth_events must be known; the state before it is the resolution of the states
	// after its prev_events (known and not outliers, or given in PrevStates), or
	// StateEventIDs when given. It is rejected if it fails auth against its auth_events or
	// that state (and then stored as rejected when that state is known), and soft-failed
	// (stored, not a forward extremity, not sent to readers) if it fails against the room's
	// current state. Writers check signatures and hashes before submitting.
	KindFederated Kind = "federated"
	// KindRemoteMembership is a complete membership event about a local user in a room
	// this server may not be in, settled with another server directly: an invite received
	// with /invite, or the leave that rejects one through send_leave. The roomserver lacks
	// the room's state to check it against the auth rules (the writer checked signatures
	// and that it concerns a local user), so it stores it as an outlier, leaves its own
	// state alone, and writes it to OutputRoomEvent with the event as the one added state
	// event, so readers show the invite (or its end) to the user. Sent again as an event
	// of the room (federated), it is placed like any outlier. In a room this server is in,
	// whose events before it are here and whose state allows it, it is placed at once as
	// KindFederated, so that the user's next act (joining) is checked against a state that
	// has it.
	KindRemoteMembership Kind = "remote_membership"
	// KindBackfilled is a complete event from another server that is older than the
	// room's known timeline, fetched with /backfill. It is placed like KindFederated (auth
	// against its auth_events and against the state before it, from its prev_events or
	// StateEventIDs) but changes neither the current state nor the forward extremities and
	// is never soft-failed. Its output is an OutputTypeBackfilledEvent, not a new event:
	// readers store it as history before what they have. The events of one message are
	// given oldest first (each after its prev_events); their outputs are written newest
	// first, so a reader that numbers them downwards keeps the timeline's order. A writer
	// sends one backfill in one message for that reason.
	KindBackfilled Kind = "backfilled"
	// KindRemoteJoin is a local user's join settled with another server (make_join,
	// send_join), with the state before it that server answered in StateEventIDs (sent
	// first as outliers). It is checked like KindFederated against that state. When no
	// local user is joined in the room's current state here (the room is new to this
	// server, or every local member left it and this server's copy stopped following it),
	// that copy is stale: the join is never soft-failed against it, it becomes the room's
	// only forward extremity, and the state after it becomes the current state, whatever
	// the stale copy held (readers get the difference as the output's added and removed
	// state). Otherwise (a restricted join through a resident server) it is placed like
	// KindFederated.
	KindRemoteJoin Kind = "remote_join"
)

// ProtoEvent is a local event before the roomserver places it in the room.
type ProtoEvent struct {
	Sender   string          `json:"sender"`
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key,omitempty"`
	Content  json.RawMessage `json:"content"`
	Redacts  string          `json:"redacts,omitempty"`
}

// TransactionID identifies a client's send so that a repeated PUT returns the same event.
type TransactionID struct {
	UserID        string `json:"user_id"`
	DeviceID      string `json:"device_id"`
	TransactionID string `json:"txn_id"`
}

// InputRoomEvent is one event to apply.
type InputRoomEvent struct {
	Kind Kind `json:"kind"`
	// Proto is set for local events the roomserver completes.
	Proto *ProtoEvent `json:"proto,omitempty"`
	// Event is set for complete events.
	Event *Event `json:"event,omitempty"`
	// StateEventIDs, for a federated event whose prev_events the roomserver may lack, is
	// the state before the event; every event named must already be known (writers send
	// them first as outliers).
	StateEventIDs []string `json:"state_event_ids,omitempty"`
	// PrevStates, for a federated or backfilled event some of whose prev_events the
	// roomserver has not placed (unknown to it, or outliers), is the state before each such
	// prev event, by its ID, as event IDs; the prev event itself and every event named
	// must already be stored (writers send them first as outliers). The state before the
	// event is then the resolution of the states after all its prev_events: the
	// roomserver's own for those it placed, these (plus the prev event when it is a state
	// event) for the others. Ignored when StateEventIDs is given.
	PrevStates map[string][]string `json:"prev_states,omitempty"`
	// TxnID, if set, makes the send idempotent: a second event with the same TxnID gets the
	// first one's event ID and is not applied again.
	TxnID *TransactionID `json:"txn_id,omitempty"`
}

// InputRoomEvents is the InputRoomEvent payload: events for one room, applied in order.
type InputRoomEvents struct {
	RoomID string `json:"room_id"`
	// RoomVersion is required when the batch creates the room.
	RoomVersion string `json:"room_version,omitempty"`
	// Atomic means all events are applied or none is (createRoom). It applies to local
	// events only: each complete event from another server stands on its own.
	Atomic bool             `json:"atomic,omitempty"`
	Events []InputRoomEvent `json:"events"`
	// MessageID is a random ID the writer gives the message (Input sets it) and asks the
	// result for: after a log reset another message can hold the same partition and
	// offset, and its result must never be taken for this one's.
	MessageID string `json:"message_id,omitempty"`
}

// Result is the outcome of one input event.
type Result struct {
	EventID string `json:"event_id,omitempty"`
	// Err is set if the event was rejected; nothing of it was stored, except for a federated
	// or backfilled event that the auth rules refused (403) when the state before it was
	// known: that one is kept as rejected so that later events may name it as a prev event
	// (spec "Rejection"), and never reaches readers. On the wire its HTTP
	// status travels as error_status (a Matrix error body has none), so that a writer in
	// another process answers the client with the same status as in the monolith.
	Err *matrixerr.Error `json:"error,omitempty"`
	// SoftFailed is set for a federated event that was stored but failed auth against the
	// room's current state: readers never see it.
	SoftFailed bool `json:"soft_failed,omitempty"`
}

type resultWire struct {
	EventID    string           `json:"event_id,omitempty"`
	Err        *matrixerr.Error `json:"error,omitempty"`
	ErrStatus  int              `json:"error_status,omitempty"`
	SoftFailed bool             `json:"soft_failed,omitempty"`
}

// MarshalJSON writes the result with its error's status.
func (r Result) MarshalJSON() ([]byte, error) {
	w := resultWire{EventID: r.EventID, Err: r.Err, SoftFailed: r.SoftFailed}
	if r.Err != nil {
		w.ErrStatus = r.Err.Status
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads a result written by MarshalJSON.
func (r *Result) UnmarshalJSON(b []byte) error {
	var w resultWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	r.EventID, r.Err, r.SoftFailed = w.EventID, w.Err, w.SoftFailed
	if r.Err != nil {
		r.Err.Status = w.ErrStatus
	}
	return nil
}

// InputRoomEventsRequest is what a writer submits.
type InputRoomEventsRequest struct {
	Input InputRoomEvents `json:"input"`
}

// InputRoomEventsResponse holds one Result per input event, in order.
type InputRoomEventsResponse struct {
	Results []Result `json:"results"`
}

// QueryInputResultRequest asks the shard that owns a partition for the outcome of the
// message at Offset, waiting until it has been processed.
type QueryInputResultRequest struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
	// MessageID, when set, is the InputRoomEvents.MessageID of the message produced at
	// Offset: a result of another message there is not an answer (503, retry).
	MessageID string `json:"message_id,omitempty"`
}

// QueryInputResultResponse is the outcome of one InputRoomEvents message.
type QueryInputResultResponse struct {
	Results []Result `json:"results"`
}

// Remote reports whether the message holds events from other servers (federated,
// outlier, remote_membership, backfilled or remote_join), which the roomserver decides one
// by one (Atomic does not apply to them).
func (m *InputRoomEvents) Remote() bool {
	for _, e := range m.Events {
		if e.Kind == KindFederated || e.Kind == KindOutlier || e.Kind == KindRemoteMembership || e.Kind == KindBackfilled || e.Kind == KindRemoteJoin {
			return true
		}
	}
	return false
}
