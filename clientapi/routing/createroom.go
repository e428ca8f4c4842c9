package routing

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/roomalias"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// DefaultRoomVersion is the version of rooms created without one.
const DefaultRoomVersion = gomatrixserverlib.RoomVersionV10

// Room presets.
const (
	presetPrivateChat        = "private_chat"
	presetTrustedPrivateChat = "trusted_private_chat"
	presetPublicChat         = "public_chat"
)

type createRoomRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           json.RawMessage   `json:"creation_content"`
	InitialState              []initialState    `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage   `json:"power_level_content_override"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
}

type initialState struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// validate checks the request and fills defaults.
func (req *createRoomRequest) validate() error {
	if req.RoomVersion == "" {
		req.RoomVersion = string(DefaultRoomVersion)
	}
	if !supportedRoomVersion(gomatrixserverlib.RoomVersion(req.RoomVersion)) {
		return matrixerr.UnsupportedRoomVersion("room version " + req.RoomVersion + " is not supported")
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return matrixerr.BadJSON("visibility must be public or private")
	}
	if req.Preset == "" {
		req.Preset = presetPrivateChat
		if req.Visibility == "public" {
			req.Preset = presetPublicChat
		}
	}
	switch req.Preset {
	case presetPrivateChat, presetTrustedPrivateChat, presetPublicChat:
	default:
		return matrixerr.BadJSON("unknown preset " + req.Preset)
	}
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			return matrixerr.InvalidParam("invalid user ID to invite: " + u)
		}
	}
	for _, c := range [][]byte{req.CreationContent, req.PowerLevelContentOverride} {
		if len(c) > 0 && string(c) != "null" && !isObject(c) {
			return matrixerr.BadJSON("creation_content and power_level_content_override must be objects")
		}
	}
	for _, s := range req.InitialState {
		if s.Type == "" || !isObject(s.Content) {
			return matrixerr.BadJSON("initial_state events need a type and an object content")
		}
	}
	return nil
}

// alias is the room alias the request asks for, nil for none.
func (req *createRoomRequest) alias(server spec.ServerName) (*roomalias.Alias, error) {
	if req.RoomAliasName == "" {
		return nil, nil
	}
	a, err := roomalias.Parse("#" + req.RoomAliasName + ":" + string(server))
	if err != nil {
		return nil, matrixerr.InvalidParam("room_alias_name does not make a valid room alias")
	}
	return &a, nil
}

// supportedRoomVersion reports whether rooms of version v can be created here; the
// capabilities endpoint advertises exactly these versions.
func supportedRoomVersion(v gomatrixserverlib.RoomVersion) bool {
	return gomatrixserverlib.StableRoomVersion(v)
}

func isObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && m != nil
}

// CreateRoom is POST /createRoom. The create event is built and signed here, because the
// room ID of v12 rooms is derived from it; every other initial event is completed by the
// roomserver. All of them go in one atomic input message: the room is made whole or not
// at all.
func (rm *Rooms) CreateRoom(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var req createRoomRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return httputil.Response{}, err
	}
	if err := req.validate(); err != nil {
		return httputil.Response{}, err
	}
	for _, raw := range req.Invite3PID {
		var inv threePIDInvite
		if err := json.Unmarshal(raw, &inv); err != nil {
			return httputil.Response{}, matrixerr.BadJSON("invite_3pid entries must be objects")
		}
		if err := inv.validate(); err != nil {
			return httputil.Response{}, err
		}
		if rm.IdentityServers == nil {
			return httputil.Response{}, errNoIdentityServer
		}
	}
	alias, err := req.alias(rm.ServerName)
	if err != nil {
		return httputil.Response{}, err
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(req.RoomVersion))
	partition, err := rm.Placement.Reserve(r.Context())
	if err != nil {
		return httputil.Response{}, err
	}
	roomID, err := rm.createRoom(r, dev, &req, alias, verImpl, partition)
	if roomID == "" {
		rm.Placement.Release(partition)
	}
	if err != nil {
		return httputil.Response{}, err
	}
	if err = rm.inviteRemotes(r, roomID, dev.UserID, &req); err != nil {
		return httputil.Response{}, err
	}
	if err = rm.invite3PIDs(r, roomID, dev.UserID, &req); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"room_id": roomID}), nil
}

// createRoom creates the room, on partition when it is not -1, and returns its ID once
// the roomserver holds it (the invites of other servers' users come after); "" when the
// room was not created.
func (rm *Rooms) createRoom(r *http.Request, dev *uapi.Device, req *createRoomRequest, alias *roomalias.Alias, verImpl gomatrixserverlib.IRoomVersion, partition int32) (string, error) {
	ctx := r.Context()
	create, roomID, err := rm.buildCreate(dev.UserID, "", partition, verImpl, req.CreationContent)
	if err != nil {
		return "", err
	}
	protos, err := rm.initialEvents(ctx, dev.UserID, req, alias)
	if err != nil {
		return "", err
	}
	input := rsapi.InputRoomEvents{RoomID: roomID, RoomVersion: req.RoomVersion, Atomic: true,
		Events: []rsapi.InputRoomEvent{{Kind: rsapi.KindNew, Event: &rsapi.Event{PDU: create}}}}
	for i := range protos {
		input.Events = append(input.Events, rsapi.InputRoomEvent{Kind: rsapi.KindNew, Proto: &protos[i]})
	}
	// The alias is taken before the room exists (its ID is known from the create event),
	// so a taken alias fails the request with nothing created, and given back if the
	// room is refused.
	if alias != nil {
		if err = rm.createAlias(ctx, *alias, roomID, dev, matrixerr.RoomInUse); err != nil {
			return "", err
		}
	}
	if _, err = rm.submit(ctx, input); err != nil {
		if alias != nil {
			if _, rerr := rm.RSAPI.PerformRemoveRoomAlias(ctx, &rsapi.PerformRemoveRoomAliasRequest{Alias: alias.String()}); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return "", err
	}
	if req.Visibility == visibilityPublic {
		if _, err = rm.RSAPI.PerformSetRoomVisibility(ctx, &rsapi.PerformSetRoomVisibilityRequest{RoomID: roomID, Public: true}); err != nil {
			return roomID, err
		}
	}
	return roomID, nil
}

// inviteRemotes sends the invites of other servers' users once the room exists (the last
// events of the room, after those of local invitees), each through the federated invite
// path as POST /invite does. Every invite is tried; each failure is logged, and the first
// is the request's answer with the room's ID in room_id: the room exists all the same (the
// spec's createRoom may fail on an invite while the room is created, see M_INVITE_BLOCKED),
// the creator is joined to it and can invite again. See docs/federation.md.
func (rm *Rooms) inviteRemotes(r *http.Request, roomID, sender string, req *createRoomRequest) error {
	var first *matrixerr.Error
	for _, invitee := range req.Invite {
		if rm.isLocalUser(invitee) {
			continue
		}
		err := rm.inviteRemote(r.Context(), roomID, sender, invitee, memberContent{Membership: spec.Invite, IsDirect: req.IsDirect})
		if err == nil {
			continue
		}
		httputil.Logger(r).WithError(err).WithFields(logrus.Fields{"room_id": roomID, "user_id": invitee}).Warn("an invite of the new room failed")
		if first != nil {
			continue
		}
		var merr *matrixerr.Error
		if errors.As(err, &merr) {
			c := *merr
			first = &c
		} else {
			first = matrixerr.Unknown("the room was created but an invite could not be sent")
		}
		first.RoomID = roomID
	}
	if first == nil {
		return nil
	}
	return first
}

// buildCreate builds and signs the room's create event and returns the room ID: roomID when
// set (versions before 12, whose room IDs are chosen), else a new one on partition (any
// when -1; see rsapi.Placement). A v12 room's ID is its create event's hash: the event is
// built again a millisecond earlier each time until the hash lands on the partition.
func (rm *Rooms) buildCreate(sender, roomID string, partition int32, verImpl gomatrixserverlib.IRoomVersion, extra json.RawMessage) (gomatrixserverlib.PDU, string, error) {
	content := map[string]any{}
	if len(extra) > 0 && string(extra) != "null" {
		if err := json.Unmarshal(extra, &content); err != nil {
			return nil, "", matrixerr.BadJSON("creation_content must be an object")
		}
	}
	content["room_version"] = string(verImpl.Version())
	if !creatorImplicit(verImpl.Version()) {
		content["creator"] = sender
	}
	if roomID == "" && !verImpl.DomainlessRoomIDs() {
		var err error
		if roomID, err = rm.newRoomID(partition); err != nil {
			return nil, "", err
		}
	}
	empty := ""
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: spec.MRoomCreate, StateKey: &empty, Depth: 1, Version: verImpl}
	if err := proto.SetContent(content); err != nil {
		return nil, "", matrixerr.BadJSON(err.Error())
	}
	now := time.Now()
	for try := 0; ; try++ {
		ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(now.Add(-time.Duration(try)*time.Millisecond), rm.ServerName, rm.KeyID, rm.PrivateKey)
		if err != nil {
			return nil, "", matrixerr.BadJSON(err.Error())
		}
		if id := ev.RoomID().String(); roomID != "" || rm.Placement.Holds(id, partition) || try == maxPlacementTries {
			return ev, id, nil
		}
	}
}

// maxPlacementTries bounds the search for a room ID on the chosen partition: each try
// lands there with probability 1/P, so 2,000 tries fail for P = 16 with probability
// (15/16)^2000, never in practice; the room then goes where its last ID hashes.
const maxPlacementTries = 2000

// newRoomID is a random room ID of this server (versions before 12) on partition (any when -1).
func (rm *Rooms) newRoomID(partition int32) (string, error) {
	for try := 0; ; try++ {
		local, err := randomLocalpart()
		if err != nil {
			return "", err
		}
		id := fmt.Sprintf("!%s:%s", local, rm.ServerName)
		if rm.Placement.Holds(id, partition) || try == maxPlacementTries {
			return id, nil
		}
	}
}

// creatorImplicit reports whether the version takes the creator from the sender (v11+).
func creatorImplicit(v gomatrixserverlib.RoomVersion) bool {
	return redactsInContent(string(v))
}

func randomLocalpart() (string, error) {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 18)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		if err != nil {
			return "", err
		}
		b[i] = letters[n.Int64()]
	}
	return string(b), nil
}

// initialEvents are the events after the create event, in the order the spec gives.
func (rm *Rooms) initialEvents(ctx context.Context, sender string, req *createRoomRequest, alias *roomalias.Alias) ([]rsapi.ProtoEvent, error) {
	var out []rsapi.ProtoEvent
	add := func(evType, stateKey string, content any) error {
		raw, ok := content.(json.RawMessage)
		if !ok {
			var err error
			if raw, err = json.Marshal(content); err != nil {
				return err
			}
		}
		sk := stateKey
		out = append(out, rsapi.ProtoEvent{Sender: sender, Type: evType, StateKey: &sk, Content: raw})
		return nil
	}
	join := memberContent{Membership: spec.Join}
	if err := rm.profileContent(ctx, sender, &join); err != nil {
		return nil, err
	}
	if err := add(spec.MRoomMember, sender, join); err != nil {
		return nil, err
	}
	pl, err := powerLevels(sender, req)
	if err != nil {
		return nil, err
	}
	if err = add(spec.MRoomPowerLevels, "", pl); err != nil {
		return nil, err
	}
	if alias != nil {
		if err = add(mRoomCanonicalAlias, "", map[string]string{"alias": alias.String()}); err != nil {
			return nil, err
		}
	}
	initial := map[string]bool{}
	for _, s := range req.InitialState {
		initial[s.Type+"\x00"+s.StateKey] = true
	}
	defaults := []struct {
		evType  string
		content any
	}{
		{spec.MRoomJoinRules, map[string]string{"join_rule": spec.Invite}},
		{spec.MRoomHistoryVisibility, map[string]string{"history_visibility": "shared"}},
		{mRoomGuestAccess, map[string]string{"guest_access": guestAccessCanJoin}},
	}
	if req.Preset == presetPublicChat {
		// The public_chat preset forbids guests, which a room without m.room.guest_access
		// does already (spec m.room.guest_access): no event is sent for it, as Synapse does.
		defaults[0].content = map[string]string{"join_rule": spec.Public}
		defaults = defaults[:2]
	}
	for _, d := range defaults {
		if initial[d.evType+"\x00"] {
			continue
		}
		if err = add(d.evType, "", d.content); err != nil {
			return nil, err
		}
	}
	for _, s := range req.InitialState {
		if err = add(s.Type, s.StateKey, s.Content); err != nil {
			return nil, err
		}
	}
	if req.Name != nil {
		if err = add(spec.MRoomName, "", map[string]string{"name": *req.Name}); err != nil {
			return nil, err
		}
	}
	if req.Topic != nil {
		if err = add(spec.MRoomTopic, "", map[string]string{"topic": *req.Topic}); err != nil {
			return nil, err
		}
	}
	for _, invitee := range req.Invite {
		if !rm.isLocalUser(invitee) {
			continue // invited through federation once the room exists: inviteRemotes
		}
		inv := memberContent{Membership: spec.Invite, IsDirect: req.IsDirect}
		if err = rm.profileContent(ctx, invitee, &inv); err != nil {
			return nil, err
		}
		if err = add(spec.MRoomMember, invitee, inv); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// powerLevels is the initial power levels content: the spec's defaults, the creator at
// 100 (before v12) (and invitees of a trusted private chat), then the client's override on top.
func powerLevels(sender string, req *createRoomRequest) (json.RawMessage, error) {
	users := map[string]int64{}
	if !gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(req.RoomVersion)).PrivilegedCreators() {
		// From v12 the creator outranks every power level and must not be listed.
		users[sender] = 100
	}
	if req.Preset == presetTrustedPrivateChat {
		for _, u := range req.Invite {
			users[u] = 100
		}
	}
	pl := map[string]any{
		"users": users, "users_default": 0,
		"events": map[string]int64{
			spec.MRoomName: 50, spec.MRoomPowerLevels: 100, spec.MRoomHistoryVisibility: 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"notifications": map[string]int64{"room": 50},
	}
	if len(req.PowerLevelContentOverride) > 0 && string(req.PowerLevelContentOverride) != "null" {
		var override map[string]json.RawMessage
		if err := json.Unmarshal(req.PowerLevelContentOverride, &override); err != nil {
			return nil, matrixerr.BadJSON("power_level_content_override must be an object")
		}
		for k, v := range override {
			pl[k] = v
		}
	}
	return json.Marshal(pl)
}
