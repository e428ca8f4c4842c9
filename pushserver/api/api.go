// Package api is the push server's public shapes: the pushers clients register for push
// gateways. The push server is the reader that turns room events into notifications and
// pushes (DESIGN.md 2, 13); clients reach it through /pushers and /notifications.
package api

import (
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

// QueryOutputRecordsRequest asks for the OutputNotificationData records of one partition.
type QueryOutputRecordsRequest = eventlog.QueryOutputRecordsRequest

// QueryOutputRecordsResponse holds OutputNotificationData records as they were produced.
type QueryOutputRecordsResponse = eventlog.QueryOutputRecordsResponse

// ReplayAPI is how readers of OutputNotificationData recover what a wiped or truncated log lost.
type ReplayAPI = eventlog.ReplayAPI

// OutputSequence is how a reader applies OutputNotificationData by the records' Seq and fetches what
// its log lost from r (see eventlog.Sequenced and eventlog.Guard).
func OutputSequence(r ReplayAPI) *eventlog.Sequenced {
	return eventlog.ReplaySequenced(r)
}
