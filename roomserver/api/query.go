package api

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// StateKeyTuple names one piece of room state.
type StateKeyTuple struct {
	EventType string `json:"type"`
	StateKey  string `json:"state_key"`
}

// QueryRoomInfoRequest asks whether the server knows a room.
type QueryRoomInfoRequest struct {
	RoomID string `json:"room_id"`
}

// QueryRoomInfoResponse describes a known room.
type QueryRoomInfoResponse struct {
	Exists      bool   `json:"exists"`
	RoomVersion string `json:"room_version,omitempty"`
	// LatestEventIDs are the room's forward extremities and Depth the greatest depth among
	// its timeline events; both empty while the room holds outliers only.
	LatestEventIDs []string `json:"latest_event_ids,omitempty"`
	Depth          int64    `json:"depth,omitempty"`
}

// QueryCurrentStateRequest asks for the room's current state, all of it when Tuples is empty.
type QueryCurrentStateRequest struct {
	RoomID string          `json:"room_id"`
	Tuples []StateKeyTuple `json:"tuples,omitempty"`
	// Types asks, with or instead of Tuples, for every state event of these types
	// (m.space.child, whose state keys are room IDs). Neither set is the whole state.
	Types []string `json:"types,omitempty"`
}

// QueryCurrentStateResponse holds the state events found.
type QueryCurrentStateResponse struct {
	RoomExists  bool    `json:"room_exists"`
	RoomVersion string  `json:"room_version,omitempty"`
	StateEvents []Event `json:"state_events"`
}

// QueryMembershipForUserRequest asks for a user's membership in a room.
type QueryMembershipForUserRequest struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
}

// QueryMembershipForUserResponse is the user's current membership.
type QueryMembershipForUserResponse struct {
	RoomExists bool `json:"room_exists"`
	// Membership is "" when the user never had a membership event in the room.
	Membership string `json:"membership,omitempty"`
	// EventID of the current membership event.
	EventID string `json:"event_id,omitempty"`
}

// QueryRoomsForUserRequest asks for the rooms where a user has a given membership.
type QueryRoomsForUserRequest struct {
	UserID     string `json:"user_id"`
	Membership string `json:"membership"`
}

// QueryRoomsForUserResponse lists room IDs.
type QueryRoomsForUserResponse struct {
	RoomIDs []string `json:"room_ids"`
}

// QueryEventsByIDRequest asks for events by ID, of any room when RoomID is empty.
type QueryEventsByIDRequest struct {
	RoomID   string   `json:"room_id"`
	EventIDs []string `json:"event_ids"`
}

// QueryEventsByIDResponse holds the events found; unknown IDs are left out.
type QueryEventsByIDResponse struct {
	Events []Event `json:"events"`
	// OutlierIDs are the IDs of the returned events that are outliers (stored, not in the
	// timeline, no state known at them).
	OutlierIDs []string `json:"outlier_ids,omitempty"`
	// RejectedIDs are the requested events of the room that it stores as rejected (see
	// KindFederated): they are not in Events, since nobody may be given them, but they are
	// part of the room's graph, so an event naming one as a prev event has no gap there.
	// Rejected outliers (no state known before them) are left out like unknown events, and
	// so is every rejected event in a query without a room.
	RejectedIDs []string `json:"rejected_ids,omitempty"`
}

// QueryStateAtEventRequest asks for the room state before or after an event, restricted to
// Tuples when given.
type QueryStateAtEventRequest struct {
	RoomID  string          `json:"room_id"`
	EventID string          `json:"event_id"`
	After   bool            `json:"after"`
	Tuples  []StateKeyTuple `json:"tuples,omitempty"`
}

// QueryStateAtEventResponse holds the state events.
type QueryStateAtEventResponse struct {
	EventKnown  bool    `json:"event_known"`
	StateEvents []Event `json:"state_events"`
}

// QueryServerAllowedRequest asks which of a room's events another server may see.
type QueryServerAllowedRequest struct {
	RoomID     string          `json:"room_id"`
	ServerName spec.ServerName `json:"server_name"`
	EventIDs   []string        `json:"event_ids"`
}

// QueryServerAllowedResponse lists the requested events of the room the server may see.
// The others are unknown, of another room, or hidden from it by history visibility.
type QueryServerAllowedResponse struct {
	Allowed []string `json:"allowed"`
}

// QueryUserAllowedRequest asks which of a room's events a user may see.
type QueryUserAllowedRequest struct {
	RoomID   string   `json:"room_id"`
	UserID   string   `json:"user_id"`
	EventIDs []string `json:"event_ids"`
}

// QueryUserAllowedResponse lists the requested events of the room the user may see. The
// others are unknown, of another room, outliers, or hidden from the user by history
// visibility.
type QueryUserAllowedResponse struct {
	Allowed []string `json:"allowed"`
}

// VisibilityAPI judges history visibility for readers that serve events to users from an
// index of their own (searchapi).
type VisibilityAPI interface {
	// QueryUserAllowed applies history visibility to one user and many events of a room
	// at once, by the state of the room at each event.
	QueryUserAllowed(ctx context.Context, req *QueryUserAllowedRequest) (*QueryUserAllowedResponse, error)
}

// SearchRoomserverAPI is what the searchapi uses: queries, per-user visibility and the
// stored timelines its reindex rebuilds the index from.
type SearchRoomserverAPI interface {
	QueryAPI
	VisibilityAPI
	TimelineAPI
}

// QueryAPI is the read side every component may use.
type QueryAPI interface {
	QueryRoomInfo(ctx context.Context, req *QueryRoomInfoRequest) (*QueryRoomInfoResponse, error)
	QueryCurrentState(ctx context.Context, req *QueryCurrentStateRequest) (*QueryCurrentStateResponse, error)
	QueryMembershipForUser(ctx context.Context, req *QueryMembershipForUserRequest) (*QueryMembershipForUserResponse, error)
	QueryRoomsForUser(ctx context.Context, req *QueryRoomsForUserRequest) (*QueryRoomsForUserResponse, error)
	QueryEventsByID(ctx context.Context, req *QueryEventsByIDRequest) (*QueryEventsByIDResponse, error)
	QueryStateAtEvent(ctx context.Context, req *QueryStateAtEventRequest) (*QueryStateAtEventResponse, error)
	// QueryServerAllowed applies history visibility to a server: a server may see an event
	// that at least one of its users could see, by the state of the room at the event.
	QueryServerAllowed(ctx context.Context, req *QueryServerAllowedRequest) (*QueryServerAllowedResponse, error)
}

// InputAPI is how writers submit events and learn their fate.
type InputAPI interface {
	InputRoomEvents(ctx context.Context, req *InputRoomEventsRequest) (*InputRoomEventsResponse, error)
}

// WaitAPI is served by the shard that owns a partition: it blocks until the message at the
// given position has been applied and returns its results.
type WaitAPI interface {
	QueryInputResult(ctx context.Context, req *QueryInputResultRequest) (*QueryInputResultResponse, error)
}

// QueryOutputRecordsRequest asks for the OutputRoomEvent records of one partition whose
// sequence number is above AfterSeq, at most Limit of them (default and cap 500).
type QueryOutputRecordsRequest struct {
	Partition int32 `json:"partition"`
	AfterSeq  int64 `json:"after_seq"`
	Limit     int   `json:"limit,omitempty"`
}

// QueryOutputRecordsResponse holds the records, in sequence order, exactly as they were
// produced (each an OutputRoomEvent with its Seq), and the partition's last sequence
// number: a reader has them all once it applied LastSeq.
type QueryOutputRecordsResponse struct {
	Records []json.RawMessage `json:"records"`
	LastSeq int64             `json:"last_seq"`
}

// ReplayAPI is how readers of OutputRoomEvent recover what a reset or truncated log lost:
// the roomserver's outbox is the truth, the log a copy of it. Served by the shard owning the
// partition (OutputRoomEvent and InputRoomEvent have the same partitions). Records older
// than room_server.output_replay_window are gone: asking for them is 404 M_NOT_FOUND.
type ReplayAPI interface {
	QueryOutputRecords(ctx context.Context, req *QueryOutputRecordsRequest) (*QueryOutputRecordsResponse, error)
}

// ClientRoomserverAPI is what clientapi uses.
type ClientRoomserverAPI interface {
	QueryAPI
	InputAPI
	DirectoryAPI
}

// FederationRoomserverAPI is what the federationapi uses: queries, and input of events from
// other servers.
type FederationRoomserverAPI interface {
	QueryAPI
	InputAPI
	DirectoryAPI
}

// SyncRoomserverAPI is what syncapi uses; QueryRoomAlias resolves the alias of a room to
// peek into.
type SyncRoomserverAPI interface {
	QueryAPI
	ReplayAPI
	QueryRoomAlias(ctx context.Context, req *QueryRoomAliasRequest) (*QueryRoomAliasResponse, error)
}

// FederationSenderRoomserverAPI is what the federationsender uses: queries, and the replay
// of OutputRoomEvent.
type FederationSenderRoomserverAPI interface {
	QueryAPI
	ReplayAPI
}

// ServerAPI is everything a roomserver shard serves.
type ServerAPI interface {
	QueryAPI
	VisibilityAPI
	WaitAPI
	ReplayAPI
	DirectoryAPI
	TimelineAPI
}

// QueryRoomsRequest asks for the IDs of the rooms the roomserver stores, in room ID order,
// after AfterRoomID (from the first when empty), at most Limit of them (default and cap
// 500).
type QueryRoomsRequest struct {
	AfterRoomID string `json:"after_room_id,omitempty"`
	Limit       int    `json:"limit,omitempty"`
}

// QueryRoomsResponse lists room IDs in order; fewer than the limit means there are no more.
type QueryRoomsResponse struct {
	RoomIDs []string `json:"room_ids"`
}

// QueryRoomEventsRequest asks for a page of a room's stored timeline, newest first in the
// roomserver's storage order: the events stored before BeforeNID (from the newest when 0),
// at most Limit of them (default and cap 500).
type QueryRoomEventsRequest struct {
	RoomID    string `json:"room_id"`
	BeforeNID int64  `json:"before_nid,omitempty"`
	Limit     int    `json:"limit,omitempty"`
}

// TimelineEvent is one stored timeline event (outliers are not in the timeline). Event is
// set only for events readers are given: rejected and soft-failed events carry their ID and
// status alone. A redacted event is given in its redacted form.
type TimelineEvent struct {
	NID        int64  `json:"nid"`
	EventID    string `json:"event_id"`
	Rejected   bool   `json:"rejected,omitempty"`
	SoftFailed bool   `json:"soft_failed,omitempty"`
	Redacted   bool   `json:"redacted,omitempty"`
	Event      *Event `json:"event,omitempty"`
}

// QueryRoomEventsResponse is one page. NextBeforeNID continues with older events; it is 0
// when this page reached the room's oldest event (or the room is unknown).
type QueryRoomEventsResponse struct {
	Events        []TimelineEvent `json:"events"`
	NextBeforeNID int64           `json:"next_before_nid,omitempty"`
}

// maxTimelinePage is the default and cap of a QueryRooms or QueryRoomEvents page.
const maxTimelinePage = 500

// TimelinePage is the page size a QueryRooms or QueryRoomEvents request with limit gets.
func TimelinePage(limit int) int {
	if limit <= 0 || limit > maxTimelinePage {
		return maxTimelinePage
	}
	return limit
}

// TimelineAPI walks everything the roomserver stores, for readers that rebuild their own
// copy from it (the searchapi's reindex) once the log and outbox no longer hold it. Room
// pages are served by the room's shard; the room list is every shard's, merged.
type TimelineAPI interface {
	QueryRooms(ctx context.Context, req *QueryRoomsRequest) (*QueryRoomsResponse, error)
	QueryRoomEvents(ctx context.Context, req *QueryRoomEventsRequest) (*QueryRoomEventsResponse, error)
}
