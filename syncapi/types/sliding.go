package types

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Limits of a simplified sliding sync request (MSC4186).
const (
	// MaxSlidingLists and MaxSlidingSubscriptions are the MSC's caps on lists and
	// room_subscriptions; more is 400 M_INVALID_PARAM.
	MaxSlidingLists         = 100
	MaxSlidingSubscriptions = 100
	// MaxSlidingTimelineLimit caps timeline_limit (the MSC lets the server cap it).
	MaxSlidingTimelineLimit = 100
	// MaxSlidingToDeviceLimit caps, and DefaultSlidingToDeviceLimit defaults, the
	// to_device extension's limit.
	MaxSlidingToDeviceLimit     = 1000
	DefaultSlidingToDeviceLimit = 100
	// maxSlidingIDLength bounds conn_id and list names (opaque identifiers, 255 at most).
	maxSlidingIDLength = 255
)

// SlidingRequest is the body of POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync.
// It accepts the MSC's current form and the one Synapse (and so Element X) speaks today:
// range or ranges, required_state as an object or as [type, state_key] pairs, is_invited
// or is_invite, and pos, timeout and set_presence in the body or the query string.
type SlidingRequest struct {
	ConnID string `json:"conn_id"`
	// TxnID is echoed in the response, so that a client can tell which request it answers
	// (Synapse and matrix-rust-sdk use it; the MSC does not name it).
	TxnID             string                       `json:"txn_id"`
	Pos               string                       `json:"pos"`
	Timeout           *int64                       `json:"timeout"`
	SetPresence       string                       `json:"set_presence"`
	Lists             map[string]SlidingList       `json:"lists"`
	RoomSubscriptions map[string]SlidingRoomConfig `json:"room_subscriptions"`
	Extensions        map[string]json.RawMessage   `json:"extensions"`

	// Ext are the known extensions, decoded by Validate; unknown ones are ignored, as
	// clients add extensions of newer proposals.
	Ext SlidingExtensions `json:"-"`
}

// SlidingRoomConfig is the room config of a list or a room subscription.
type SlidingRoomConfig struct {
	TimelineLimit *int64          `json:"timeline_limit"`
	RequiredState json.RawMessage `json:"required_state"`

	// State is RequiredState decoded by Validate.
	State RequiredState `json:"-"`
}

// SlidingList is one named list.
type SlidingList struct {
	SlidingRoomConfig
	Range   []int64         `json:"range"`
	Ranges  [][]int64       `json:"ranges"`
	Filters *SlidingFilters `json:"filters"`

	// Ranged is set by Validate when range or ranges was given (an empty ranges matches no
	// room); without either the list has every room that passes its filters.
	Ranged bool `json:"-"`
}

// SlidingFilters narrows a list (SlidingRoomFilter). Nil fields filter nothing.
type SlidingFilters struct {
	IsDM         *bool     `json:"is_dm"`
	Spaces       []string  `json:"spaces"`
	IsEncrypted  *bool     `json:"is_encrypted"`
	IsInvited    *bool     `json:"is_invited"`
	IsInvite     *bool     `json:"is_invite"`
	RoomTypes    []*string `json:"room_types"`
	NotRoomTypes []*string `json:"not_room_types"`
	Tags         []string  `json:"tags"`
	NotTags      []string  `json:"not_tags"`
}

// Invited is is_invited, or the older is_invite.
func (f *SlidingFilters) Invited() *bool {
	if f.IsInvited != nil {
		return f.IsInvited
	}
	return f.IsInvite
}

// StateElement matches state by type and state key; nil matches any. The state key "$ME"
// stands for the syncing user.
type StateElement struct {
	Type     *string `json:"type"`
	StateKey *string `json:"state_key"`
}

// RequiredState is what state a room config asks for.
type RequiredState struct {
	Include []StateElement `json:"include"`
	Exclude []StateElement `json:"exclude"`
	Lazy    bool           `json:"lazy_members"`
}

// Key is a canonical form of the config, to tell whether it changed between requests.
func (r RequiredState) Key() string {
	b, _ := json.Marshal(r) // plain strings and bools always encode
	return string(b)
}

// SlidingExtensions are the extensions the server knows.
type SlidingExtensions struct {
	ToDevice    *ToDeviceExtension `json:"to_device"`
	E2EE        *ExtensionToggle   `json:"e2ee"`
	AccountData *ScopedExtension   `json:"account_data"`
	Receipts    *ScopedExtension   `json:"receipts"`
	Typing      *ScopedExtension   `json:"typing"`
}

// ExtensionToggle is an extension with only "enabled" (absent means off).
type ExtensionToggle struct {
	Enabled *bool `json:"enabled"`
}

// On reports whether the extension is enabled.
func (e *ExtensionToggle) On() bool {
	return e != nil && e.Enabled != nil && *e.Enabled
}

// ToDeviceExtension is the to_device extension's config.
type ToDeviceExtension struct {
	ExtensionToggle
	Limit *int64 `json:"limit"`
	Since string `json:"since"`

	// SincePos is Since parsed (0 when absent).
	SincePos int64 `json:"-"`
}

// ScopedExtension is an extension about rooms: it covers the rooms of the lists named in
// Lists and the subscribed rooms named in Rooms; "*" names them all; an absent field is "*".
type ScopedExtension struct {
	ExtensionToggle
	Lists []string `json:"lists"`
	Rooms []string `json:"rooms"`
}

// Validate checks the request (and the query's pos, timeout and set_presence, which the
// body overrides), decoding required_state and the extensions. Bad input is a 400 with the
// spec's code.
func (r *SlidingRequest) Validate(queryPos, queryTimeout, querySetPresence string) error {
	if r.Pos == "" {
		r.Pos = queryPos
	}
	if r.SetPresence == "" {
		r.SetPresence = querySetPresence
	}
	switch r.SetPresence {
	case "", "online", "unavailable", "offline":
	default:
		return matrixerr.InvalidParam("set_presence must be online, unavailable or offline")
	}
	if r.Timeout == nil && queryTimeout != "" {
		t, err := strconv.ParseInt(queryTimeout, 10, 64)
		if err != nil {
			return matrixerr.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		r.Timeout = &t
	}
	if r.Timeout != nil && *r.Timeout < 0 {
		return matrixerr.InvalidParam("timeout must be a non-negative number of milliseconds")
	}
	if len(r.ConnID) > maxSlidingIDLength || !utf8.ValidString(r.ConnID) {
		return matrixerr.InvalidParam("conn_id is too long")
	}
	if len(r.Lists) > MaxSlidingLists {
		return matrixerr.InvalidParam(fmt.Sprintf("at most %d lists", MaxSlidingLists))
	}
	if len(r.RoomSubscriptions) > MaxSlidingSubscriptions {
		return matrixerr.InvalidParam(fmt.Sprintf("at most %d room subscriptions", MaxSlidingSubscriptions))
	}
	for name, l := range r.Lists {
		if !opaqueID(name) {
			return matrixerr.InvalidParam("list names must be 1 to 255 of the characters A-Z a-z 0-9 . _ ~ -")
		}
		if err := l.validate(name); err != nil {
			return err
		}
		r.Lists[name] = l
	}
	for roomID, c := range r.RoomSubscriptions {
		if _, err := spec.NewRoomID(roomID); err != nil {
			return matrixerr.InvalidParam("room_subscriptions must be keyed by room IDs")
		}
		if err := c.validate("room_subscriptions " + roomID); err != nil {
			return err
		}
		r.RoomSubscriptions[roomID] = c
	}
	return r.decodeExtensions()
}

// opaqueID reports whether s follows the spec's opaque identifier grammar.
func opaqueID(s string) bool {
	if s == "" || len(s) > maxSlidingIDLength {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._~-", c)) {
			return false
		}
	}
	return true
}

func (l *SlidingList) validate(name string) error {
	if err := l.SlidingRoomConfig.validate("list " + name); err != nil {
		return err
	}
	l.Ranged = l.Range != nil || l.Ranges != nil
	if l.Range != nil {
		l.Ranges = append([][]int64{l.Range}, l.Ranges...)
	}
	for _, rg := range l.Ranges {
		if len(rg) != 2 || rg[0] < 0 || rg[1] < rg[0] {
			return matrixerr.InvalidParam("list " + name + ": a range is [start, end] with 0 <= start <= end")
		}
	}
	return nil
}

func (c *SlidingRoomConfig) validate(what string) error {
	if c.TimelineLimit == nil {
		return matrixerr.MissingParam(what + ": timeline_limit is required")
	}
	if *c.TimelineLimit < 0 {
		return matrixerr.InvalidParam(what + ": timeline_limit must not be negative")
	}
	*c.TimelineLimit = min(*c.TimelineLimit, MaxSlidingTimelineLimit)
	st, err := parseRequiredState(c.RequiredState)
	if err != nil {
		return matrixerr.InvalidParam(what + ": " + err.Error())
	}
	c.State = st
	return nil
}

// Wildcards of the pair form of required_state.
const (
	stateWildcard = "*"
	stateLazy     = "$LAZY"
)

// parseRequiredState reads the MSC's object form or the pair form
// [["m.room.member", "$LAZY"], ["*", "*"], ...].
func parseRequiredState(raw json.RawMessage) (RequiredState, error) {
	var st RequiredState
	trimmed := strings.TrimSpace(string(raw))
	switch {
	case trimmed == "" || trimmed == "null":
		return st, nil
	case strings.HasPrefix(trimmed, "{"):
		if err := json.Unmarshal(raw, &st); err != nil {
			return st, errors.New("required_state must be an object with include, exclude and lazy_members")
		}
		return st, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return st, errors.New("required_state must be an object or a list of [type, state_key] pairs")
	}
	for _, p := range pairs {
		if len(p) != 2 {
			return st, errors.New("required_state pairs are [type, state_key]")
		}
		if p[0] == spec.MRoomMember && p[1] == stateLazy {
			st.Lazy = true
			continue
		}
		var el StateElement
		if p[0] != stateWildcard {
			el.Type = &p[0]
		}
		if p[1] != stateWildcard {
			el.StateKey = &p[1]
		}
		st.Include = append(st.Include, el)
	}
	return st, nil
}

func (r *SlidingRequest) decodeExtensions() error {
	for name, dst := range map[string]any{"to_device": &r.Ext.ToDevice, "e2ee": &r.Ext.E2EE,
		"account_data": &r.Ext.AccountData, "receipts": &r.Ext.Receipts, "typing": &r.Ext.Typing} {
		raw, ok := r.Extensions[name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return matrixerr.BadJSON("extension " + name + " has the wrong shape")
		}
	}
	if td := r.Ext.ToDevice; td != nil {
		if td.Limit != nil && *td.Limit < 0 {
			return matrixerr.InvalidParam("to_device: limit must not be negative")
		}
		if td.Since != "" {
			pos, err := strconv.ParseInt(td.Since, 10, 64)
			if err != nil || pos < 0 {
				return matrixerr.InvalidParam("to_device: since is not a valid token")
			}
			td.SincePos = pos
		}
	}
	for name, ext := range map[string]*ScopedExtension{"account_data": r.Ext.AccountData, "receipts": r.Ext.Receipts, "typing": r.Ext.Typing} {
		if ext == nil {
			continue
		}
		for _, l := range ext.Lists {
			if _, ok := r.Lists[l]; !ok && l != stateWildcard {
				return matrixerr.InvalidParam("extension " + name + " names an unknown list")
			}
		}
	}
	return nil
}

// ToDeviceLimit is the to_device extension's limit, defaulted and capped.
func (e *ToDeviceExtension) ToDeviceLimit() int {
	if e.Limit == nil || *e.Limit == 0 {
		return DefaultSlidingToDeviceLimit
	}
	return int(min(*e.Limit, MaxSlidingToDeviceLimit))
}

// SlidingResponse is the sliding sync response body.
type SlidingResponse struct {
	TxnID      string                       `json:"txn_id,omitempty"`
	Pos        string                       `json:"pos"`
	Lists      map[string]SlidingListResult `json:"lists"`
	Rooms      map[string]*SlidingRoom      `json:"rooms"`
	Extensions SlidingExtensionsResult      `json:"extensions"`
}

// SlidingListResult is a list's result.
type SlidingListResult struct {
	Count int `json:"count"`
}

// Hero is a member who may name an unnamed room.
type Hero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// SlidingRoom is a room's result: all of it when Initial, else what changed.
type SlidingRoom struct {
	// Name and Avatar are a JSON string, or null when removed.
	Name             json.RawMessage     `json:"name,omitempty"`
	Avatar           json.RawMessage     `json:"avatar,omitempty"`
	Heroes           []Hero              `json:"heroes,omitempty"`
	IsDM             *bool               `json:"is_dm,omitempty"`
	Initial          bool                `json:"initial,omitempty"`
	ExpandedTimeline bool                `json:"expanded_timeline,omitempty"`
	RequiredState    []SlidingState      `json:"required_state,omitempty"`
	Timeline         []clientevent.Event `json:"timeline,omitempty"`
	PrevBatch        string              `json:"prev_batch,omitempty"`
	Limited          bool                `json:"limited,omitempty"`
	NumLive          *int                `json:"num_live,omitempty"`
	JoinedCount      *int                `json:"joined_count,omitempty"`
	InvitedCount     *int                `json:"invited_count,omitempty"`
	BumpStamp        *int64              `json:"bump_stamp,omitempty"`
	Membership       string              `json:"membership,omitempty"`
	Lists            []string            `json:"lists,omitempty"`
	// StrippedState is the invite or knock state.
	StrippedState []clientevent.StrippedEvent `json:"stripped_state,omitempty"`
	// InviteState repeats StrippedState under the name Synapse's implementation, and so
	// current Element X and matrix-rust-sdk, read. NOTSPEC: MSC4186 renamed it
	// (https://github.com/matrix-org/matrix-spec-proposals/pull/4186).
	InviteState []clientevent.StrippedEvent `json:"invite_state,omitempty"`
}

// SlidingState is an entry of a room's required_state: a state event, or, when Stub, a
// StateStub (MSC4186): only the type and state key of an entry removed from the room's
// state. Clients tell them apart by the presence of content.
type SlidingState struct {
	clientevent.Event
	Stub bool
}

// MarshalJSON writes the event, or the stub's type and state key.
func (s SlidingState) MarshalJSON() ([]byte, error) {
	if !s.Stub {
		return json.Marshal(s.Event)
	}
	sk := ""
	if s.StateKey != nil {
		sk = *s.StateKey
	}
	return json.Marshal(struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
	}{s.Type, sk})
}

// UnmarshalJSON reads an event, or a stub when there is no content.
func (s *SlidingState) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &s.Event); err != nil {
		return err
	}
	s.Stub = len(s.Content) == 0
	return nil
}

// SlidingExtensionsResult holds the results of the enabled extensions.
type SlidingExtensionsResult struct {
	ToDevice    *SlidingToDevice    `json:"to_device,omitempty"`
	E2EE        *SlidingE2EE        `json:"e2ee,omitempty"`
	AccountData *SlidingAccountData `json:"account_data,omitempty"`
	Receipts    *SlidingEphemeral   `json:"receipts,omitempty"`
	Typing      *SlidingEphemeral   `json:"typing,omitempty"`
}

// SlidingToDevice is the to_device extension's result.
type SlidingToDevice struct {
	NextBatch string          `json:"next_batch"`
	Events    []ToDeviceEvent `json:"events"`
}

// SlidingE2EE is the e2ee extension's result.
type SlidingE2EE struct {
	DeviceLists                  *DeviceLists   `json:"device_lists,omitempty"`
	DeviceOneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	DeviceUnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

// SlidingAccountData is the account_data extension's result.
type SlidingAccountData struct {
	Global []BasicEvent            `json:"global"`
	Rooms  map[string][]BasicEvent `json:"rooms"`
}

// SlidingEphemeral is the result of the receipts and typing extensions: one m.receipt or
// m.typing event per room.
type SlidingEphemeral struct {
	Rooms map[string]json.RawMessage `json:"rooms"`
}

// IsEmpty reports whether the extensions carry nothing new (key counts are not news).
func (e *SlidingExtensionsResult) IsEmpty() bool {
	return (e.ToDevice == nil || len(e.ToDevice.Events) == 0) &&
		(e.E2EE == nil || e.E2EE.DeviceLists == nil || len(e.E2EE.DeviceLists.Changed)+len(e.E2EE.DeviceLists.Left) == 0) &&
		(e.AccountData == nil || len(e.AccountData.Global)+len(e.AccountData.Rooms) == 0) &&
		(e.Receipts == nil || len(e.Receipts.Rooms) == 0) &&
		(e.Typing == nil || len(e.Typing.Rooms) == 0)
}

// SlidingPosToken is a pos: "s<position>_<id>", where position is the stream position the
// response covered (so that /messages accepts a pos as it accepts a next_batch) and id
// names the stored connection state.
type SlidingPosToken struct {
	Position int64
	ID       int64
}

// String is the token's wire form.
func (t SlidingPosToken) String() string {
	return "s" + strconv.FormatInt(t.Position, 10) + "_" + strconv.FormatInt(t.ID, 10)
}

// ParseSlidingPos parses a pos; ok is false for anything this server did not hand out.
func ParseSlidingPos(s string) (SlidingPosToken, bool) {
	head, tail, found := strings.Cut(s, "_")
	digits, okPrefix := strings.CutPrefix(head, "s")
	if !found || !okPrefix {
		return SlidingPosToken{}, false
	}
	pos, err1 := strconv.ParseInt(digits, 10, 64)
	id, err2 := strconv.ParseInt(tail, 10, 64)
	if err1 != nil || err2 != nil || pos < 0 || id <= 0 {
		return SlidingPosToken{}, false
	}
	return SlidingPosToken{Position: pos, ID: id}, true
}
