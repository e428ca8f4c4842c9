// Package api is the eduserver's contract: the typing and send-to-device topics it reads
// and writes, their payloads, and the producer writers use to submit input.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// TopicInputTyping is where writers report that a user started or stopped typing.
//
// Producer: clientapi (and federationapi), through Producer. Key: room ID.
// Ordering: per room, applied in log order. Payload: InputTypingEvent, version 1.
// The eduserver keeps typing state in memory only and reads this topic from its end when it
// starts: typing is ephemeral, and clients repeat it while the user types.
const TopicInputTyping = "InputTyping"

// TopicOutputTypingEvent carries a room's complete set of typing users after each change.
//
// Producer: eduserver, after a user starts or stops typing or a timeout expires. Key: room
// ID. Ordering: per room, in the order the eduserver changed the set. Payload:
// OutputTypingEvent, version 1. Readers replace their copy of the room's set with the newest
// one; since every message is a complete set, redelivery changes nothing.
const TopicOutputTypingEvent = "OutputTypingEvent"

// TopicInputSendToDevice carries client send-to-device requests.
//
// Producer: clientapi (and federationapi), through Producer. Key: the sender's user ID.
// Ordering: per sender. Payload: InputSendToDeviceEvent, version 1. The eduserver applies
// each (sender, device, transaction ID) once, expands "*" to the target's devices and writes
// one OutputSendToDeviceEvent per target device. Writers learn that a request was taken
// through WaitAPI (Producer.Wait) before they acknowledge it: a request lost with the log
// was never acknowledged, and the client's retry with its transaction ID is taken then.
const TopicInputSendToDevice = "InputSendToDevice"

// TopicOutputSendToDeviceEvent carries one message for one device.
//
// Producer: eduserver, from its outbox: the messages are stored in the transaction that
// records the request's transaction ID. Key: the target user ID. Ordering: per target user,
// in the order the eduserver expanded the requests. Payload: OutputSendToDeviceEvent,
// version 1. Delivery is at least once: readers dedupe by MessageID.
//
// Every record carries Seq, its number in its partition (dense from 1). The log is not the
// source of truth: readers apply it with OutputSequence, which skips records at or below the
// last Seq they applied and fetches what a gap or a wiped log lost from
// QueryOutputRecords; the eduserver keeps the records for edu_server.output_replay_window.
const TopicOutputSendToDeviceEvent = "OutputSendToDeviceEvent"

// InputTypingEvent says that UserID started (Typing, for TimeoutMS) or stopped typing in
// RoomID.
type InputTypingEvent struct {
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Typing    bool   `json:"typing"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	// OriginTS is when the writer received it, in Unix milliseconds; the timeout runs from
	// there.
	OriginTS int64 `json:"origin_ts"`
}

// TypingUser is a user typing until ExpiresTS (Unix milliseconds).
type TypingUser struct {
	UserID    string `json:"user_id"`
	ExpiresTS int64  `json:"expires_ts"`
}

// OutputTypingEvent is the complete set of users typing in RoomID.
type OutputTypingEvent struct {
	RoomID string       `json:"room_id"`
	Users  []TypingUser `json:"users"`
}

// InputSendToDeviceEvent is one PUT /sendToDevice/{type}/{txnId}: Messages maps a target
// user ID to device IDs (or "*" for all of them) to the content for that device.
type InputSendToDeviceEvent struct {
	Sender       string                                `json:"sender"`
	SenderDevice string                                `json:"sender_device"`
	TxnID        string                                `json:"txn_id"`
	Type         string                                `json:"type"`
	Messages     map[string]map[string]json.RawMessage `json:"messages"`
}

// OutputSendToDeviceEvent is one message for one device.
type OutputSendToDeviceEvent struct {
	// Seq is the record's number in its partition (see TopicOutputSendToDeviceEvent); 0 on
	// records written before numbers existed.
	Seq int64 `json:"seq,omitempty"`
	// MessageID is unique per (sender, sender device, transaction, target user, target
	// device): the same request always yields the same IDs.
	MessageID string          `json:"message_id"`
	Sender    string          `json:"sender"`
	Type      string          `json:"type"`
	UserID    string          `json:"user_id"`
	DeviceID  string          `json:"device_id"`
	Content   json.RawMessage `json:"content"`
}

// InputAPI is what writers use to submit typing and send-to-device input.
type InputAPI interface {
	InputTyping(ctx context.Context, ev *InputTypingEvent) error
	InputSendToDevice(ctx context.Context, ev *InputSendToDeviceEvent) error
}

// Producer implements InputAPI by appending to the eduserver's input topics.
type Producer struct {
	Log           eventlog.Log
	TypingTopic   string // full topic names, with the configured prefix
	ToDeviceTopic string
	// Wait, when set, makes InputSendToDevice return only once the eduserver has taken the
	// request (QueryToDeviceTaken): its messages are then in the eduserver's outbox, which
	// no loss of the log can take back, so a 200 to the client is durable. Without it the
	// request is only in the log.
	Wait WaitAPI
	// Timeout bounds that wait (edu_server.input_wait_timeout); 0 waits as long as ctx
	// allows. When it expires the request stays in the log and will be taken: the caller
	// gets eventlog.ErrInputTimeout and may retry with the same transaction ID, which sends
	// nothing twice.
	Timeout time.Duration
}

// InputTyping appends ev to the typing topic.
func (p *Producer) InputTyping(ctx context.Context, ev *InputTypingEvent) error {
	return eventlog.ProduceJSON(ctx, p.Log, p.TypingTopic, ev.RoomID, ev)
}

// InputSendToDevice appends ev to the send-to-device topic and, with Wait, waits until the
// eduserver has taken it.
func (p *Producer) InputSendToDevice(ctx context.Context, ev *InputSendToDeviceEvent) error {
	if err := eventlog.ProduceJSON(ctx, p.Log, p.ToDeviceTopic, ev.Sender, ev); err != nil {
		return err
	}
	if p.Wait == nil {
		return nil
	}
	err := eventlog.AwaitTaken(ctx, p.Timeout, func(ctx context.Context) error {
		_, err := p.Wait.QueryToDeviceTaken(ctx, &QueryToDeviceTakenRequest{Sender: ev.Sender, SenderDevice: ev.SenderDevice, TxnID: ev.TxnID})
		return err
	})
	if err != nil {
		return fmt.Errorf("wait for send-to-device transaction %s: %w", ev.TxnID, err)
	}
	return nil
}

// QueryToDeviceTakenRequest names one send-to-device request by its idempotency key: the
// sender, the sender's device ("" for a request from another server) and the transaction
// ID.
type QueryToDeviceTakenRequest struct {
	Sender       string `json:"sender"`
	SenderDevice string `json:"sender_device"`
	TxnID        string `json:"txn_id"`
}

// QueryToDeviceTakenResponse says that the request was taken.
type QueryToDeviceTakenResponse struct{}

// WaitAPI is how writers learn that the eduserver took a send-to-device request they
// produced (read-your-writes, DESIGN.md 5): its transaction ID is recorded and its
// messages are in the outbox, committed together.
type WaitAPI interface {
	// QueryToDeviceTaken returns once the request is taken, or ctx's error when ctx ends
	// first. A transaction taken before (a client's retry) answers at once: the messages of
	// its first delivery are the ones it sends.
	QueryToDeviceTaken(ctx context.Context, req *QueryToDeviceTakenRequest) (*QueryToDeviceTakenResponse, error)
}

// ServerAPI is everything the eduserver serves to other components.
type ServerAPI interface {
	ReplayAPI
	WaitAPI
}

// QueryOutputRecordsRequest asks for the OutputSendToDeviceEvent records of one partition.
type QueryOutputRecordsRequest = eventlog.QueryOutputRecordsRequest

// QueryOutputRecordsResponse holds OutputSendToDeviceEvent records as they were produced.
type QueryOutputRecordsResponse = eventlog.QueryOutputRecordsResponse

// ReplayAPI is how readers of OutputSendToDeviceEvent recover what a wiped or truncated log lost.
type ReplayAPI = eventlog.ReplayAPI

// OutputSequence is how a reader applies OutputSendToDeviceEvent by the records' Seq and fetches what
// its log lost from r (see eventlog.Sequenced and eventlog.Guard).
func OutputSequence(r ReplayAPI) *eventlog.Sequenced {
	return eventlog.ReplaySequenced(r)
}
