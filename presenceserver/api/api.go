// Package api is the presenceserver's contract: the presence topics it reads and writes,
// their payloads, the producer writers use, and its query API.
package api

import (
	"context"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// TopicInputPresence carries what users do that bears on their presence.
//
// Producer: clientapi (PUT /presence) and syncapi (a /sync with set_presence), and
// federationapi, through Producer. Key: user ID. Ordering: per user, applied in log order.
// Payload: InputPresenceEvent, version 1. The clientapi learns that a presence it set was
// taken through TakenAPI (Producer.Wait) before it acknowledges PUT /presence: a presence
// lost with the log was never acknowledged, and the client's retry is taken then. A
// /sync's presence and a federated m.presence are not waited for.
const TopicInputPresence = "InputPresence"

// TopicOutputPresenceEvent carries every change of a user's presence.
//
// Producer: presenceserver, after it stored the change (also when an idle or offline timer
// changes it). Key: user ID. Ordering: per user. Payload: OutputPresenceEvent, version 1.
// Every message is the user's complete presence: readers replace their copy, so redelivery
// changes nothing.
//
// Every record carries Seq, its number in its partition (dense from 1), given in the
// transaction that stores the change. The log is not the source of truth: the
// presenceserver keeps the records in its outbox for presence_server.output_replay_window,
// and readers apply them with OutputSequence, which skips records at or below the last Seq
// they applied and fetches what a gap or a wiped log lost from QueryOutputRecords.
const TopicOutputPresenceEvent = "OutputPresenceEvent"

// Presence states.
const (
	Online      = "online"
	Unavailable = "unavailable"
	Offline     = "offline"
)

// Input kinds.
const (
	// InputKindSet is an explicit PUT /presence/{userId}/status.
	InputKindSet = "set"
	// InputKindSync is a /sync with set_presence: the client is connected.
	InputKindSync = "sync"
	// InputKindTimeout asks the presenceserver to apply its idle and offline timeouts to
	// the user. The presenceserver writes it itself, so that every change of a user's
	// presence goes through the user's partition, in order.
	InputKindTimeout = "timeout"
	// InputKindRemote is a user of another server's presence as that server announced it
	// (m.presence); TS is when the user was last active. Only their server changes it: no
	// timeout applies.
	InputKindRemote = "remote"
)

// InputPresenceEvent is a presence the user set, or activity seen from the user.
type InputPresenceEvent struct {
	UserID   string `json:"user_id"`
	Kind     string `json:"kind"`
	Presence string `json:"presence"`
	// StatusMsg is set only by InputKindSet; nil clears it.
	StatusMsg *string `json:"status_msg,omitempty"`
	// TS is when it happened, in Unix milliseconds.
	TS int64 `json:"ts"`
	// InputID, set by a writer that waits for the input to be taken (QueryInputTaken),
	// names this input; "" for writers that do not wait.
	InputID string `json:"input_id,omitempty"`
}

// Presence is a user's presence.
type Presence struct {
	UserID       string  `json:"user_id"`
	Presence     string  `json:"presence"`
	StatusMsg    *string `json:"status_msg,omitempty"`
	LastActiveTS int64   `json:"last_active_ts"`
	// CurrentlyActive is true while the user is online and was active within the last
	// minute.
	CurrentlyActive bool `json:"currently_active"`
}

// OutputPresenceEvent is a user's presence after a change.
type OutputPresenceEvent struct {
	// Seq is the record's number in its partition (see TopicOutputPresenceEvent); 0 on
	// records written before numbers existed.
	Seq int64 `json:"seq,omitempty"`
	Presence
	// Changed is when the presence changed, in Unix milliseconds.
	Changed int64 `json:"changed"`
}

// QueryPresenceRequest asks for a user's presence.
type QueryPresenceRequest struct {
	UserID string `json:"user_id"`
}

// QueryPresenceResponse is the user's presence; Presence.Presence is Offline for a user
// never seen.
type QueryPresenceResponse struct {
	Presence Presence `json:"presence"`
}

// QueryAPI is the presenceserver's query API (clientapi: GET /presence).
type QueryAPI interface {
	QueryPresence(ctx context.Context, req *QueryPresenceRequest) (*QueryPresenceResponse, error)
}

// ServerAPI is everything the presenceserver serves to other components.
type ServerAPI interface {
	QueryAPI
	ReplayAPI
	TakenAPI
}

// QueryInputTakenRequest names one presence input a writer produced by its InputID.
type QueryInputTakenRequest = eventlog.QueryInputTakenRequest

// QueryInputTakenResponse says that the input was taken.
type QueryInputTakenResponse = eventlog.QueryInputTakenResponse

// TakenAPI is how writers learn that the presenceserver took a presence input they
// produced (read-your-writes, DESIGN.md 5): the user's presence, and its announcement if
// it changed visibly, are committed together with the input's InputID.
type TakenAPI = eventlog.TakenAPI

// QueryOutputRecordsRequest asks for the OutputPresenceEvent records of one partition.
type QueryOutputRecordsRequest = eventlog.QueryOutputRecordsRequest

// QueryOutputRecordsResponse holds OutputPresenceEvent records as they were produced.
type QueryOutputRecordsResponse = eventlog.QueryOutputRecordsResponse

// ReplayAPI is how readers of OutputPresenceEvent recover what a wiped or truncated log lost.
type ReplayAPI = eventlog.ReplayAPI

// OutputSequence is how a reader applies OutputPresenceEvent by the records' Seq and fetches what
// its log lost from r (see eventlog.Sequenced and eventlog.Guard).
func OutputSequence(r ReplayAPI) *eventlog.Sequenced {
	return eventlog.ReplaySequenced(r)
}

// InputAPI is what writers use to submit presence input.
type InputAPI interface {
	InputPresence(ctx context.Context, ev *InputPresenceEvent) error
}

// Producer implements InputAPI by appending to the presenceserver's input topic.
type Producer struct {
	Log   eventlog.Log
	Topic string // full topic name, with the configured prefix
	// Wait, when set, makes InputPresence return only once the presenceserver has taken
	// the input (QueryInputTaken): the presence is then stored, with its announcement in the
	// presenceserver's outbox, which no loss of the log can take back, so a 200 to the
	// client is durable. Without it the input is only in the log.
	Wait TakenAPI
	// Timeout bounds that wait (presence_server.input_wait_timeout); 0 waits as long as
	// ctx allows. When it expires the input stays in the log and will be taken: the caller
	// gets eventlog.ErrInputTimeout and may retry, which announces nothing twice (setting
	// the presence a user already has changes nothing visible).
	Timeout time.Duration
}

// InputPresence appends ev to the input topic and, with Wait, waits until the
// presenceserver has taken it.
func (p *Producer) InputPresence(ctx context.Context, ev *InputPresenceEvent) error {
	in := *ev
	w := eventlog.TakenInput{Wait: p.Wait, Timeout: p.Timeout}
	if err := w.Produce(ctx, p.Log, p.Topic, in.UserID, &in, func(id string) { in.InputID = id }); err != nil {
		return fmt.Errorf("presence of %s: %w", in.UserID, err)
	}
	return nil
}
