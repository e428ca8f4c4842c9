package types

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Filter is the spec's Filter object (POST /user/{userId}/filter and /sync?filter=).
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	AccountData EventFilter `json:"account_data"`
	Presence    EventFilter `json:"presence"`
	Room        RoomFilter  `json:"room"`
	// noTimeline records an explicit room.timeline.limit of 0, which asks for no timeline
	// events (an absent limit, also 0 in Limit, means the default).
	noTimeline bool
}

// EventFormatFederation is the event_format that asks for events as federation sends them.
const EventFormatFederation = "federation"

// EventFilter selects events by type and sender. A nil Types or Senders allows all; a '*'
// in a type matches any sequence of characters.
type EventFilter struct {
	Limit      int       `json:"limit,omitempty"`
	Types      *[]string `json:"types,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
}

// RoomEventFilter is an EventFilter for room events, with room selection and lazy-loading.
type RoomEventFilter struct {
	EventFilter
	Rooms                   *[]string `json:"rooms,omitempty"`
	NotRooms                []string  `json:"not_rooms,omitempty"`
	LazyLoadMembers         bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool      `json:"include_redundant_members,omitempty"`
	ContainsURL             *bool     `json:"contains_url,omitempty"`
	// UnreadThreadNotifications asks /sync for notification counts per thread.
	UnreadThreadNotifications bool `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter is the "room" part of a Filter.
type RoomFilter struct {
	Rooms        *[]string       `json:"rooms,omitempty"`
	NotRooms     []string        `json:"not_rooms,omitempty"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	Timeline     RoomEventFilter `json:"timeline"`
	State        RoomEventFilter `json:"state"`
	AccountData  RoomEventFilter `json:"account_data"`
	Ephemeral    RoomEventFilter `json:"ephemeral"`
}

// DefaultTimelineLimit is the timeline length per room when the filter sets none.
const DefaultTimelineLimit = 20

// MaxFilterLimit is the largest limit a filter may set (timeline, state, ephemeral and
// account data of rooms, account data, presence); larger ones are clamped to it. Every
// limit is read through LimitOr, which clamps again, so a Filter built without ParseFilter
// is bounded too. docs/limits.md lists it with the other limits a client sets.
const MaxFilterLimit = 1000

// ParseFilter decodes a Filter and clamps its limits to MaxFilterLimit. Malformed JSON, a
// limit that is not an integer in range and a negative limit are 400 M_INVALID_PARAM.
func ParseFilter(b []byte) (*Filter, error) {
	var f Filter
	if err := decodeFilter(b, &f); err != nil {
		return nil, err
	}
	for _, ef := range f.eventFilters() {
		if err := ef.clamp(); err != nil {
			return nil, err
		}
	}
	var probe struct {
		Room struct {
			Timeline struct {
				Limit *int `json:"limit"`
			} `json:"timeline"`
		} `json:"room"`
	}
	if json.Unmarshal(b, &probe) == nil && probe.Room.Timeline.Limit != nil && *probe.Room.Timeline.Limit == 0 {
		f.noTimeline = true
	}
	return &f, nil
}

// ParseRoomEventFilter decodes a RoomEventFilter (the /messages and /context filter) and
// clamps its limit as ParseFilter does.
func ParseRoomEventFilter(b []byte) (*RoomEventFilter, error) {
	var f RoomEventFilter
	if err := decodeFilter(b, &f); err != nil {
		return nil, err
	}
	if err := f.clamp(); err != nil {
		return nil, err
	}
	return &f, nil
}

// decodeFilter decodes b into dst; the error names no Go type (json's would).
func decodeFilter(b []byte, dst any) error {
	err := json.Unmarshal(b, dst)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		return matrixerr.InvalidParam(errWrongType)
	default:
		return matrixerr.InvalidParam(errNotFilter)
	}
}

// The messages of a refused filter.
const (
	errNotFilter = "filter is not a valid filter"
	errWrongType = "filter has a field of the wrong type, or a number out of range"
	errNegative  = "filter limits must not be negative"
)

// eventFilters are all the limits-carrying parts of f.
func (f *Filter) eventFilters() []*EventFilter {
	return []*EventFilter{&f.AccountData, &f.Presence, &f.Room.Timeline.EventFilter, &f.Room.State.EventFilter,
		&f.Room.AccountData.EventFilter, &f.Room.Ephemeral.EventFilter}
}

// clamp refuses a negative limit and lowers a large one to MaxFilterLimit.
func (f *EventFilter) clamp() error {
	if f.Limit < 0 {
		return matrixerr.InvalidParam(errNegative)
	}
	f.Limit = min(f.Limit, MaxFilterLimit)
	return nil
}

// LimitOr is the filter's limit clamped to MaxFilterLimit, or def when it sets none.
func (f *EventFilter) LimitOr(def int) int {
	if f.Limit <= 0 {
		return def
	}
	return min(f.Limit, MaxFilterLimit)
}

// TimelineLimit is how many timeline events per room a sync with f returns at most.
func (f *Filter) TimelineLimit() int {
	if f.noTimeline {
		return 0
	}
	return f.Room.Timeline.LimitOr(DefaultTimelineLimit)
}

// Allows reports whether an event of evType sent by sender passes the filter.
func (f *EventFilter) Allows(evType, sender string) bool {
	if !f.AllowsType(evType) {
		return false
	}
	if f.Senders != nil && !slices.Contains(*f.Senders, sender) {
		return false
	}
	return !slices.Contains(f.NotSenders, sender)
}

// AllowsType reports whether events of evType pass the filter's type lists.
func (f *EventFilter) AllowsType(evType string) bool {
	if f.Types != nil && !slices.ContainsFunc(*f.Types, func(p string) bool { return globMatch(p, evType) }) {
		return false
	}
	return !slices.ContainsFunc(f.NotTypes, func(p string) bool { return globMatch(p, evType) })
}

// AllowsRoom reports whether roomID passes the filter's room lists.
func (f *RoomEventFilter) AllowsRoom(roomID string) bool {
	return allowsRoom(f.Rooms, f.NotRooms, roomID)
}

// AllowsRoom reports whether roomID passes the filter's room lists.
func (f *RoomFilter) AllowsRoom(roomID string) bool {
	return allowsRoom(f.Rooms, f.NotRooms, roomID)
}

func allowsRoom(rooms *[]string, notRooms []string, roomID string) bool {
	if rooms != nil && !slices.Contains(*rooms, roomID) {
		return false
	}
	return !slices.Contains(notRooms, roomID)
}

// globMatch matches s against pattern, where '*' stands for any sequence of characters.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}
