package types

import (
	"encoding/json"

	"github.com/matrix-org/dendrite/internal/clientevent"
)

// BasicEvent is an account data event.
type BasicEvent struct {
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// SyncResponse is the body of GET /sync.
type SyncResponse struct {
	NextBatch   string      `json:"next_batch"`
	AccountData AccountData `json:"account_data"`
	Presence    Presence    `json:"presence"`
	ToDevice    ToDevice    `json:"to_device"`
	Rooms       Rooms       `json:"rooms"`
	// DeviceLists names the users whose device keys changed, or who no longer share a
	// room with the user, since the request's token.
	DeviceLists DeviceLists `json:"device_lists"`
	// DeviceOneTimeKeysCount and DeviceUnusedFallbackKeyTypes describe the syncing
	// device's own keys.
	DeviceOneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	DeviceUnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

// DeviceLists is /sync's device_lists. An empty list is left out (the spec makes both
// optional): sytest, like Synapse's clients, takes an absent "changed" for "nothing yet".
// GET /keys/changes, whose body it also is, always carries both.
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// MarshalKeyChanges is the body of GET /keys/changes: dl with both lists present.
func (dl DeviceLists) MarshalKeyChanges() any {
	return struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	}{Changed: nonNil(dl.Changed), Left: nonNil(dl.Left)}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Presence is the presence of users sharing a room with the user.
type Presence struct {
	Events []PresenceEvent `json:"events"`
}

// PresenceEvent is an m.presence event.
type PresenceEvent struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content PresenceContent `json:"content"`
}

// PresenceContent is an m.presence event's content.
type PresenceContent struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   int64   `json:"last_active_ago,omitempty"`
	CurrentlyActive bool    `json:"currently_active"`
	StatusMsg       *string `json:"status_msg,omitempty"`
}

// ToDevice lists the device's send-to-device messages.
type ToDevice struct {
	Events []ToDeviceEvent `json:"events"`
}

// ToDeviceEvent is a send-to-device message.
type ToDeviceEvent struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
}

// AccountData is a list of account data events.
type AccountData struct {
	Events []BasicEvent `json:"events"`
}

// Rooms groups the rooms of a sync by the user's membership.
type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Knock  map[string]*KnockedRoom `json:"knock"`
	Leave  map[string]*LeftRoom    `json:"leave"`
	// Peek holds the rooms this device peeks into (MSC2753), each shaped like a joined room.
	Peek map[string]*JoinedRoom `json:"peek,omitempty"`
}

// NewSyncResponse is an empty response with every map allocated.
func NewSyncResponse() *SyncResponse {
	return &SyncResponse{
		AccountData: AccountData{Events: []BasicEvent{}},
		Presence:    Presence{Events: []PresenceEvent{}},
		ToDevice:    ToDevice{Events: []ToDeviceEvent{}},
		Rooms: Rooms{Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{}, Knock: map[string]*KnockedRoom{}, Leave: map[string]*LeftRoom{},
			Peek: map[string]*JoinedRoom{}},

		DeviceOneTimeKeysCount:       map[string]int{},
		DeviceUnusedFallbackKeyTypes: []string{},
	}
}

// IsEmpty reports whether the response carries nothing for the client. The device's key
// counts do not count: they are in every response.
func (r *SyncResponse) IsEmpty() bool {
	return len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0 && len(r.ToDevice.Events) == 0 && len(r.Rooms.Join) == 0 &&
		len(r.Rooms.Invite) == 0 && len(r.Rooms.Knock) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Peek) == 0 && len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []clientevent.Event `json:"events"`
	Limited   bool                `json:"limited"`
	PrevBatch string              `json:"prev_batch,omitempty"`
}

// StateEvents is a room's state section.
type StateEvents struct {
	Events []clientevent.Event `json:"events"`
}

// EphemeralEvents is a room's ephemeral section: m.typing and m.receipt.
type EphemeralEvents struct {
	Events []json.RawMessage `json:"events"`
}

// JoinedRoom is a room in rooms.join.
type JoinedRoom struct {
	Timeline    Timeline        `json:"timeline"`
	State       StateEvents     `json:"state"`
	AccountData AccountData     `json:"account_data"`
	Ephemeral   EphemeralEvents `json:"ephemeral"`
	// UnreadNotifications counts the notifying events after the user's read receipt.
	UnreadNotifications UnreadNotifications `json:"unread_notifications"`
	// UnreadThreadNotifications are the counts per thread root, when the filter asks for
	// them (the main timeline's are then UnreadNotifications).
	UnreadThreadNotifications map[string]UnreadNotifications `json:"unread_thread_notifications,omitempty"`
	// Summary is set when the response carries the room's state (a full, limited or
	// lazy-loading sync of it).
	Summary *RoomSummary `json:"summary,omitempty"`
}

// RoomSummary is a joined room's member counts and, for a room without a name or canonical
// alias, the heroes a client names it after.
type RoomSummary struct {
	Heroes             []string `json:"m.heroes,omitempty"`
	JoinedMemberCount  int      `json:"m.joined_member_count"`
	InvitedMemberCount int      `json:"m.invited_member_count"`
}

// UnreadNotifications are a joined room's notification counts.
type UnreadNotifications struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

// NewJoinedRoom is a joined room with every list allocated.
func NewJoinedRoom() *JoinedRoom {
	return &JoinedRoom{Timeline: Timeline{Events: []clientevent.Event{}}, State: StateEvents{Events: []clientevent.Event{}},
		Ephemeral: EphemeralEvents{Events: []json.RawMessage{}}, AccountData: AccountData{Events: []BasicEvent{}}}
}

// InviteState is an invited room's stripped state.
type InviteState struct {
	Events []clientevent.StrippedEvent `json:"events"`
}

// KnockedRoom is a room in rooms.knock: the room's stripped state and the user's knock.
type KnockedRoom struct {
	KnockState InviteState `json:"knock_state"`
}

// InvitedRoom is a room in rooms.invite.
type InvitedRoom struct {
	InviteState InviteState `json:"invite_state"`
}

// LeftRoom is a room in rooms.leave.
type LeftRoom struct {
	Timeline    Timeline    `json:"timeline"`
	State       StateEvents `json:"state"`
	AccountData AccountData `json:"account_data"`
}

// MessagesResponse is the body of GET /rooms/{roomId}/messages.
type MessagesResponse struct {
	Start string              `json:"start"`
	End   string              `json:"end,omitempty"`
	Chunk []clientevent.Event `json:"chunk"`
	State []clientevent.Event `json:"state,omitempty"`
}

// EventsResponse is the body of GET /events, the deprecated event stream: the events
// between the tokens start and end.
type EventsResponse struct {
	Start string            `json:"start"`
	End   string            `json:"end"`
	Chunk []json.RawMessage `json:"chunk"`
}

// ContextResponse is the body of GET /rooms/{roomId}/context/{eventId}.
type ContextResponse struct {
	Start        string              `json:"start"`
	End          string              `json:"end"`
	EventsBefore []clientevent.Event `json:"events_before"`
	Event        clientevent.Event   `json:"event"`
	EventsAfter  []clientevent.Event `json:"events_after"`
	State        []clientevent.Event `json:"state"`
}
