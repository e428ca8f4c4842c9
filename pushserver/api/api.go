// Package api is the push server's public shapes: the pushers clients register for push
// gateways. The push server is the reader that turns room events into notifications and
// pushes (DESIGN.md 2, 13); clients reach it through /pushers and /notifications.
package api

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// Pusher is one pusher as GET /pushers lists it and POST /pushers/set takes it.
type Pusher struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// PusherKindHTTP is the kind of pusher that posts to an HTTP push gateway.
const PusherKindHTTP = "http"

// NotifyPath is the path every HTTP pusher's URL must end with.
const NotifyPath = "/_matrix/push/v1/notify"

// TopicOutputNotificationData carries users' unread notification counts.
//
// Producer: pushserver, whenever a room's counts of a local user change (a notification
// recorded, a receipt that read some). Key: user ID; per-user order. Payload:
// OutputNotificationData, version 1, with the room's counts in full (not a delta).
// Delivery is at least once: readers replace what they hold for the (user, room), so
// replays change nothing. Consumers: syncapi serves them as unread_notifications and
// unread_thread_notifications.
//
// Every record carries Seq, its number in its partition (dense from 1), given in the
// transaction that stores the counts' change. The log is not the source of truth: the
// pushserver keeps the records in its outbox for push_server.output_replay_window, and
// readers apply them with OutputSequence, which skips records at or below the last Seq
// they applied and fetches what a gap or a wiped log lost from QueryOutputRecords.
const TopicOutputNotificationData = "OutputNotificationData"

// OutputNotificationData is a user's unread counts in one room after a change.
type OutputNotificationData struct {
	// Seq is the record's number in its partition (see TopicOutputNotificationData); 0 on
	// records written before numbers existed.
	Seq    int64  `json:"seq,omitempty"`
	UserID string `json:"user_id"`
	RoomID string `json:"room_id"`
	// Threads are the counts per thread: MainThread for events outside threads, else
	// the thread root's event ID. Threads without unread notifications are left out.
	Threads map[string]Counts `json:"threads"`
}

// Counts are unread notification and highlight counts.
type Counts struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

// MainThread is the thread ID of events outside any thread (as in threaded receipts).
const MainThread = "main"

// QueryOutputRecordsRequest asks for the OutputNotificationData records of one partition
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

// ReplayAPI is how readers of OutputNotificationData recover what a wiped or truncated log
// lost: the pushserver's outbox is the truth, the log a copy of it. Records older than
// push_server.output_replay_window are gone: asking for them is 404 M_NOT_FOUND.
type ReplayAPI interface {
	QueryOutputRecords(ctx context.Context, req *QueryOutputRecordsRequest) (*QueryOutputRecordsResponse, error)
}

// OutputSequence is how a reader applies OutputNotificationData by the records' Seq and
// fetches what its log lost from r (see eventlog.Sequenced and eventlog.Guard).
func OutputSequence(r ReplayAPI) *eventlog.Sequenced {
	return eventlog.OwnerSequenced(func(ctx context.Context, partition int32, after int64, limit int) ([]json.RawMessage, int64, error) {
		res, err := r.QueryOutputRecords(ctx, &QueryOutputRecordsRequest{Partition: partition, AfterSeq: after, Limit: limit})
		if err != nil {
			return nil, 0, err
		}
		return res.Records, res.LastSeq, nil
	}, eventlog.HTTPNotFound)
}
