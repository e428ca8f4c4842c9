package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/guestaccess"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/roomalias"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	peekapi "github.com/matrix-org/dendrite/syncapi/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// The guest access state event and the value that lets guests join.
const (
	mRoomGuestAccess   = "m.room.guest_access"
	guestAccessCanJoin = "can_join"
)

// memberContent is the content of an m.room.member event this server writes.
type memberContent struct {
	Membership  string `json:"membership"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
	Reason      string `json:"reason,omitempty"`
	IsDirect    bool   `json:"is_direct,omitempty"`
	// JoinAuthorisedVia is join_authorised_via_users_server of a restricted join.
	JoinAuthorisedVia string `json:"join_authorised_via_users_server,omitempty"`
	// Extra are other keys of a /join or /knock body, copied into the content as Synapse
	// does (sytest "POST /join/:room_id can join a room with custom content"). The fields
	// above win over them; serverOnlyKeys are never taken from a client.
	Extra map[string]json.RawMessage `json:"-"`
}

// serverOnlyKeys are member content keys a client's body cannot set: the membership, the
// restricted join's authorising user (which this server vouches for by signing the event)
// and the third-party invite proof of the request.
var serverOnlyKeys = []string{"membership", "join_authorised_via_users_server", "third_party_invite", "third_party_signed"}

// MarshalJSON writes the fields over the extra keys.
func (c memberContent) MarshalJSON() ([]byte, error) {
	type plain memberContent
	fields, err := json.Marshal(plain(c))
	if err != nil || len(c.Extra) == 0 {
		return fields, err
	}
	out := map[string]json.RawMessage{}
	for k, v := range c.Extra {
		if !slices.Contains(serverOnlyKeys, k) {
			out[k] = v
		}
	}
	var own map[string]json.RawMessage
	if err = json.Unmarshal(fields, &own); err != nil {
		return nil, err
	}
	for k, v := range own {
		out[k] = v
	}
	return json.Marshal(out)
}

// targetBody is the body of invite, kick, ban and unban. IDServer, IDAccessToken, Medium
// and Address are the third-party form of invite.
type targetBody struct {
	UserID        string `json:"user_id"`
	Reason        string `json:"reason,omitempty"`
	IDServer      string `json:"id_server,omitempty"`
	IDAccessToken string `json:"id_access_token,omitempty"`
	Medium        string `json:"medium,omitempty"`
	Address       string `json:"address,omitempty"`
}

// errNoIdentityServer answers a third-party invite (POST /invite with id_server, medium and
// address, createRoom's invite_3pid) when this server has no identity server client.
// Refused before anything is created, rather than ignored.
var errNoIdentityServer = matrixerr.ServerNotTrusted("third-party invites are not supported: this server talks to no identity server")

// profileContent fills display name and avatar of a local user into a member event.
func (rm *Rooms) profileContent(ctx context.Context, userID string, c *memberContent) error {
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() != rm.ServerName {
		return nil
	}
	p, err := rm.UserAPI.QueryProfile(ctx, &uapi.QueryProfileRequest{UserID: userID})
	if err != nil {
		var merr *matrixerr.Error
		if isNotFound(err, &merr) {
			return nil
		}
		return err
	}
	c.DisplayName, c.AvatarURL = p.DisplayName, p.AvatarURL
	return nil
}

func isNotFound(err error, merr **matrixerr.Error) bool {
	return asMatrixErr(err, merr) && (*merr).Code == "M_NOT_FOUND"
}

// setMembership sends sender's m.room.member event about target.
func (rm *Rooms) setMembership(ctx context.Context, roomID, sender, target string, c memberContent) (string, error) {
	if c.Membership == spec.Join || c.Membership == spec.Invite || c.Membership == spec.Knock {
		if err := rm.profileContent(ctx, target, &c); err != nil {
			return "", err
		}
	}
	content, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	return rm.sendProto(ctx, roomID, &rsapi.ProtoEvent{Sender: sender, Type: spec.MRoomMember, StateKey: &target, Content: content}, nil)
}

// putMemberState is PUT /rooms/{roomId}/state/m.room.member/{userId}: a membership event
// with the client's own content, such as a per-room display name or avatar. The roomserver
// checks the content and the auth rules (a join->join self-update is allowed, a change of
// someone else's display name is not). What needs more than one event goes as the
// membership endpoints do it: a join of a room this server has no copy of through
// federation, an invite of another server's user through its server. A guest's join needs
// the room's guest access, as on /join.
func (rm *Rooms) putMemberState(ctx context.Context, dev *uapi.Device, roomID, target string, raw json.RawMessage) (httputil.Response, error) {
	var content map[string]any
	if err := json.Unmarshal(raw, &content); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("the body must be a JSON object")
	}
	membership, _ := content["membership"].(string)
	reason, _ := content["reason"].(string)
	if _, err := spec.NewUserID(target, true); err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("the state key of m.room.member must be a user ID")
	}
	switch {
	case membership == spec.Join && target == dev.UserID:
		local, err := rm.joinLocally(ctx, roomID)
		if err != nil {
			return httputil.Response{}, err
		}
		if dev.IsGuest() {
			if err = rm.checkGuestCanJoin(ctx, roomID, dev.UserID, local); err != nil {
				return httputil.Response{}, err
			}
		}
		if !local {
			if err = rm.joinRemote(ctx, nil, roomID, dev.UserID, membershipBody{Reason: reason}); err != nil {
				return httputil.Response{}, err
			}
			m, err := rm.membership(ctx, roomID, dev.UserID)
			if err != nil {
				return httputil.Response{}, err
			}
			return httputil.OK(map[string]string{"event_id": m.EventID}), nil
		}
		if err = rm.fillProfile(ctx, dev.UserID, content); err != nil {
			return httputil.Response{}, err
		}
	case membership == spec.Invite && !rm.isLocalUser(target):
		if err := rm.requireJoined(ctx, roomID, dev.UserID); err != nil {
			return httputil.Response{}, err
		}
		if err := rm.inviteRemote(ctx, roomID, dev.UserID, target, memberContent{Membership: spec.Invite, Reason: reason}); err != nil {
			return httputil.Response{}, err
		}
		m, err := rm.membership(ctx, roomID, target)
		if err != nil {
			return httputil.Response{}, err
		}
		return httputil.OK(map[string]string{"event_id": m.EventID}), nil
	}
	body, err := json.Marshal(content)
	if err != nil {
		return httputil.Response{}, err
	}
	eventID, err := rm.sendProto(ctx, roomID, &rsapi.ProtoEvent{Sender: dev.UserID, Type: spec.MRoomMember, StateKey: &target, Content: body}, nil)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"event_id": eventID}), nil
}

// fillProfile sets a join's displayname and avatar_url from the user's profile where the
// client gave none.
func (rm *Rooms) fillProfile(ctx context.Context, userID string, content map[string]any) error {
	var p memberContent
	if err := rm.profileContent(ctx, userID, &p); err != nil {
		return err
	}
	if _, ok := content["displayname"]; !ok && p.DisplayName != "" {
		content["displayname"] = p.DisplayName
	}
	if _, ok := content["avatar_url"]; !ok && p.AvatarURL != "" {
		content["avatar_url"] = p.AvatarURL
	}
	return nil
}

// decodeOptional reads an optional JSON object body (empty is allowed).
func decodeOptional(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return httputil.DecodeJSON(r, v)
}

// Join is POST /join/{roomIdOrAlias} and POST /rooms/{roomId}/join. An alias is resolved
// first (through its server when it is not ours). A room this server is not in is joined
// through other servers: the server_name (or via) query parameters, the servers the alias
// resolved to, the server of the user's invite and the room ID's server, in that order.
func (rm *Rooms) Join(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID := vars["roomID"]
	if roomID == "" {
		roomID = vars["roomIDOrAlias"]
	}
	q := r.URL.Query()
	roomID, servers, body, err := rm.membershipTarget(r, roomID)
	if err != nil {
		return httputil.Response{}, err
	}
	hints := append(append(q["server_name"], q["via"]...), servers...)
	local, err := rm.joinLocally(ctx, roomID)
	if err != nil {
		return httputil.Response{}, err
	}
	if dev.IsGuest() {
		if err = rm.checkGuestCanJoin(ctx, roomID, dev.UserID, local); err != nil {
			return httputil.Response{}, err
		}
	}
	if !local {
		if err = rm.joinRemote(ctx, hints, roomID, dev.UserID, body); err != nil {
			return httputil.Response{}, err
		}
		rm.afterJoin(r, roomID, dev.UserID)
		return httputil.OK(map[string]string{"room_id": roomID}), nil
	}
	joined, err := rm.rejoinThroughResidents(ctx, hints, roomID, dev.UserID, body)
	if err != nil || joined {
		if joined {
			rm.afterJoin(r, roomID, dev.UserID)
		}
		return httputil.OK(map[string]string{"room_id": roomID}), err
	}
	m, err := rm.membership(ctx, roomID, dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	if m.Membership == spec.Join {
		return httputil.OK(map[string]string{"room_id": roomID}), nil
	}
	if _, ok := body.Extra["third_party_signed"]; ok && m.Membership != spec.Invite {
		if err = rm.exchangeThirdPartyInvite(ctx, roomID, body.Extra["third_party_signed"]); err != nil {
			return httputil.Response{}, err
		}
		if m, err = rm.membership(ctx, roomID, dev.UserID); err != nil {
			return httputil.Response{}, err
		}
	}
	via, err := rm.restrictedJoinAuthoriser(ctx, roomID, dev.UserID, m.Membership)
	if errors.Is(err, errRemoteAuthoriser) {
		if err = rm.joinThroughResident(ctx, hints, roomID, dev.UserID, body); err != nil {
			return httputil.Response{}, err
		}
		rm.afterJoin(r, roomID, dev.UserID)
		return httputil.OK(map[string]string{"room_id": roomID}), nil
	}
	if err != nil {
		return httputil.Response{}, err
	}
	if _, err = rm.setMembership(ctx, roomID, dev.UserID, dev.UserID, memberContent{Membership: spec.Join, Reason: body.Reason, JoinAuthorisedVia: via, Extra: body.Extra}); err != nil {
		return httputil.Response{}, err
	}
	rm.afterJoin(r, roomID, dev.UserID)
	return httputil.OK(map[string]string{"room_id": roomID}), nil
}

// afterJoin carries the user's tags, and this server's aliases and directory entry, over
// from the room the joined room replaced. The join has happened whatever this does, so a
// failure is logged, not answered.
func (rm *Rooms) afterJoin(r *http.Request, roomID, userID string) {
	if err := rm.copyPredecessorTags(r.Context(), roomID, userID); err != nil {
		httputil.Logger(r).WithError(err).WithField("room_id", roomID).Warn("copying tags from the replaced room failed")
	}
	if err := rm.adoptPredecessorDirectory(r.Context(), roomID); err != nil {
		httputil.Logger(r).WithError(err).WithField("room_id", roomID).Warn("moving aliases and the directory entry from the replaced room failed")
	}
}

// checkGuestCanJoin fails with M_FORBIDDEN unless the room's guest access is can_join, which
// the spec requires before a guest joins: in the room's current state here, or, for a room
// this server has no current copy of (local false), in the stripped state of the guest's
// invite (invite_room_state, from the inviting server, which is in the room: the only
// state known here; without it the room has no state to allow the join).
func (rm *Rooms) checkGuestCanJoin(ctx context.Context, roomID, userID string, local bool) error {
	if !local {
		ok, err := rm.inviteAllowsGuests(ctx, roomID, userID)
		if err != nil {
			return err
		}
		if !ok {
			return matrixerr.Forbidden("guests may join only rooms whose guest access this server knows")
		}
		return nil
	}
	ok, err := rm.guestAccessCanJoin(ctx, roomID)
	if err != nil {
		return err
	}
	if !ok {
		return matrixerr.Forbidden("guest access is not allowed in this room")
	}
	return nil
}

// inviteAllowsGuests reports whether the user is invited to the room by an invite whose
// stripped state has m.room.guest_access can_join.
func (rm *Rooms) inviteAllowsGuests(ctx context.Context, roomID, userID string) (bool, error) {
	m, err := rm.RSAPI.QueryMembershipForUser(ctx, &rsapi.QueryMembershipForUserRequest{RoomID: roomID, UserID: userID})
	if err != nil || m.Membership != spec.Invite || m.EventID == "" {
		return false, err
	}
	res, err := rm.RSAPI.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{m.EventID}})
	if err != nil || len(res.Events) == 0 {
		return false, err
	}
	var unsigned struct {
		InviteRoomState []struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
			Content  struct {
				GuestAccess string `json:"guest_access"`
			} `json:"content"`
		} `json:"invite_room_state"`
	}
	if json.Unmarshal(res.Events[0].Unsigned(), &unsigned) != nil {
		return false, nil // stripped state that does not parse allows nothing
	}
	for _, e := range unsigned.InviteRoomState {
		if e.Type == guestaccess.EventType && e.StateKey == "" && e.Content.GuestAccess == guestAccessCanJoin {
			return true, nil
		}
	}
	return false, nil
}

// guestAccessCanJoin reports whether the room's current m.room.guest_access is can_join.
func (rm *Rooms) guestAccessCanJoin(ctx context.Context, roomID string) (bool, error) {
	return guestaccess.CanJoin(ctx, rm.RSAPI, roomID)
}

// removeGuests makes every local guest joined to the room leave it, as the spec requires
// once m.room.guest_access no longer says can_join. Each leave is the guest's own, which the
// auth rules always allow. It runs after the guest access change was accepted, so a guest
// joining concurrently is refused by checkGuestCanJoin or removed here.
func (rm *Rooms) removeGuests(ctx context.Context, roomID string) error {
	guests, err := guestaccess.GuestsToRemove(ctx, rm.RSAPI, rm.UserAPI, rm.ServerName, roomID)
	if err != nil {
		return err
	}
	for _, g := range guests {
		if _, err = rm.setMembership(ctx, roomID, g, g, memberContent{Membership: spec.Leave}); err != nil {
			return err
		}
	}
	return nil
}

// joinLocally reports whether a join to roomID is an event of this server's copy of the
// room: the room has a timeline here and one of our users is joined, or it is a room of
// this server. Otherwise this server's copy is missing or stale, and the join goes through
// another server.
func (rm *Rooms) joinLocally(ctx context.Context, roomID string) (bool, error) {
	in, err := rm.serverInRoom(ctx, roomID)
	if err != nil || in {
		return in, err
	}
	rid, _ := spec.NewRoomID(roomID) // checked by the caller
	if rid.Domain() != rm.ServerName || rm.Federation == nil {
		return rm.Federation == nil, nil
	}
	info, err := rm.RSAPI.QueryRoomInfo(ctx, &rsapi.QueryRoomInfoRequest{RoomID: roomID})
	if err != nil {
		return false, err
	}
	return len(info.LatestEventIDs) > 0, nil
}

// rejoinThroughResidents joins the user to a room of this server that none of our users is
// joined to any more but users of other servers are, in this server's copy: the room may
// have gone on there unseen here (an invite from one of them, say), so the join goes
// through those servers (make_join, send_join), whose state then replaces the stale copy.
// It reports false, and nothing happened, when there is no such server or none could be
// reached (the join is then one of this server's copy); a refusal is returned.
func (rm *Rooms) rejoinThroughResidents(ctx context.Context, hints []string, roomID, userID string, body membershipBody) (bool, error) {
	if rm.Federation == nil {
		return false, nil
	}
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Types: []string{spec.MRoomMember}})
	if err != nil {
		return false, err
	}
	servers := slices.Clone(hints)
	for _, e := range cur.StateEvents {
		uid, err := spec.NewUserID(*e.StateKey(), true)
		if m, _ := e.Membership(); err != nil || m != spec.Join {
			continue
		}
		if uid.Domain() == rm.ServerName {
			return false, nil
		}
		if !slices.Contains(servers, string(uid.Domain())) {
			servers = append(servers, string(uid.Domain()))
		}
	}
	if len(servers) == len(hints) {
		return false, nil
	}
	err = rm.joinRemote(ctx, servers, roomID, userID, body)
	var merr *matrixerr.Error
	if err != nil && isNotFound(err, &merr) {
		return false, nil
	}
	return err == nil, err
}

// serverInRoom reports whether the room has a timeline here and one of our users is
// joined to it (so events sent here reach the other servers). It reads the room's whole
// current state: fine for a join or leave, not for a hot path.
func (rm *Rooms) serverInRoom(ctx context.Context, roomID string) (bool, error) {
	info, err := rm.RSAPI.QueryRoomInfo(ctx, &rsapi.QueryRoomInfoRequest{RoomID: roomID})
	if err != nil || !info.Exists || len(info.LatestEventIDs) == 0 {
		return false, err
	}
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID})
	if err != nil {
		return false, err
	}
	for _, e := range cur.StateEvents {
		if e.Type() != spec.MRoomMember || e.StateKey() == nil {
			continue
		}
		uid, err := spec.NewUserID(*e.StateKey(), true)
		if err != nil || uid.Domain() != rm.ServerName {
			continue
		}
		if m, err := e.Membership(); err == nil && m == spec.Join {
			return true, nil
		}
	}
	return false, nil
}

// joinRemote joins the user to a room this server is not in, through the federationapi.
func (rm *Rooms) joinRemote(ctx context.Context, servers []string, roomID, userID string, body membershipBody) error {
	if rm.Federation == nil {
		return matrixerr.NotFound("unknown room")
	}
	c := memberContent{Membership: spec.Join, Reason: body.Reason, Extra: body.Extra}
	if err := rm.profileContent(ctx, userID, &c); err != nil {
		return err
	}
	content, err := json.Marshal(c)
	if err != nil {
		return err
	}
	cache := rm.joinedCache()
	cache.forget(roomID, userID)
	defer cache.forget(roomID, userID)
	_, err = rm.Federation.PerformJoin(ctx, &fapi.PerformJoinRequest{RoomID: roomID, UserID: userID, ServerNames: servers, Content: content})
	return err
}

// joinThroughResident joins the user to a restricted room this server is in but cannot
// vouch for the join of (errRemoteAuthoriser): through another server in the room, whose
// make_join names one of its users as the authoriser and whose send_join signs the join.
// The servers tried are hints, then those of the room's other joined members. With none,
// the join is refused (403).
func (rm *Rooms) joinThroughResident(ctx context.Context, hints []string, roomID, userID string, body membershipBody) error {
	cur, err := rm.RSAPI.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Types: []string{spec.MRoomMember}})
	if err != nil {
		return err
	}
	servers := slices.Clone(hints)
	for _, e := range cur.StateEvents {
		uid, err := spec.NewUserID(*e.StateKey(), true)
		if m, _ := e.Membership(); err == nil && m == spec.Join && uid.Domain() != rm.ServerName && !slices.Contains(servers, string(uid.Domain())) {
			servers = append(servers, string(uid.Domain()))
		}
	}
	if len(servers) == 0 || rm.Federation == nil {
		return matrixerr.Forbidden("no server in the room may authorise your join")
	}
	return rm.joinRemote(ctx, servers, roomID, userID, body)
}

// knockRemote knocks on a room this server is not in through one of servers.
func (rm *Rooms) knockRemote(ctx context.Context, servers []string, roomID, userID string, body membershipBody) error {
	if rm.Federation == nil {
		return matrixerr.NotFound("unknown room")
	}
	c := memberContent{Membership: spec.Knock, Reason: body.Reason, Extra: body.Extra}
	if err := rm.profileContent(ctx, userID, &c); err != nil {
		return err
	}
	content, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = rm.Federation.PerformKnock(ctx, &fapi.PerformKnockRequest{RoomID: roomID, UserID: userID, ServerNames: servers, Content: content})
	return err
}

// Leave is POST /rooms/{roomId}/leave. Leaving a room this server is in is an event of the
// room like any other (the federationsender tells the other servers), and so is rejecting
// an invite to a room of this server that none of our users is joined to any more;
// rejecting an invite to another server's room this server is not in goes through another
// server (make_leave, send_leave). A device that only peeks into the room (MSC2753), with
// no membership, leaves it by ending the peek, as /unpeek does (200; with neither, 403).
func (rm *Rooms) Leave(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	ctx := r.Context()
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	var body struct {
		Reason string `json:"reason,omitempty"`
	}
	if err = decodeOptional(r, &body); err != nil {
		return httputil.Response{}, err
	}
	m, err := rm.membership(ctx, roomID, dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	switch m.Membership {
	case spec.Leave:
		// No membership event to send, but a peek to end, as /unpeek does (a leave event
		// ends peeks in the sync API by itself).
		if _, err = rm.endPeek(ctx, dev, roomID); err != nil {
			return httputil.Response{}, err
		}
		return httputil.OK(struct{}{}), nil
	case spec.Join, spec.Invite, spec.Knock:
	default:
		// A device peeking into a room it has no membership of leaves it by ending the peek.
		ended, err := rm.endPeek(ctx, dev, roomID)
		if err != nil {
			return httputil.Response{}, err
		}
		if ended {
			return httputil.OK(struct{}{}), nil
		}
		return httputil.Response{}, matrixerr.Forbidden("you are not a member of this room")
	}
	if m.Membership != spec.Join && rm.Federation != nil {
		in, err := rm.joinLocally(ctx, roomID)
		if err != nil {
			return httputil.Response{}, err
		}
		if !in {
			content, err := json.Marshal(memberContent{Membership: spec.Leave, Reason: body.Reason})
			if err != nil {
				return httputil.Response{}, err
			}
			if _, err = rm.Federation.PerformLeave(ctx, &fapi.PerformLeaveRequest{RoomID: roomID, UserID: dev.UserID, Content: content}); err != nil {
				return httputil.Response{}, err
			}
			return httputil.OK(struct{}{}), nil
		}
	}
	if _, err = rm.setMembership(ctx, roomID, dev.UserID, dev.UserID, memberContent{Membership: spec.Leave, Reason: body.Reason}); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// endPeek ends the device's peek (MSC2753) into the room, which the sync API keeps, and
// reports whether there was one (never without Peeks).
func (rm *Rooms) endPeek(ctx context.Context, dev *uapi.Device, roomID string) (bool, error) {
	if rm.Peeks == nil {
		return false, nil
	}
	res, err := rm.Peeks.PerformUnpeek(ctx, &peekapi.PerformUnpeekRequest{UserID: dev.UserID, DeviceID: dev.DeviceID, RoomID: roomID})
	if err != nil {
		return false, fmt.Errorf("end peek into %s: %w", roomID, err)
	}
	return res.Ended, nil
}

// Forget is POST /rooms/{roomId}/forget. The room must have been left.
func (rm *Rooms) Forget(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	m, err := rm.membership(r.Context(), roomID, dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	if m.Membership == spec.Join || m.Membership == spec.Invite {
		// The spec's answer for a user still in the room: 400 M_UNKNOWN.
		return httputil.Response{}, matrixerr.BadRequest("you must leave the room before forgetting it")
	}
	return httputil.OK(struct{}{}), nil
}

// targetAction sends a membership event about another user.
func (rm *Rooms) targetAction(r *http.Request, dev *uapi.Device, membership string) (httputil.Response, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	var body targetBody
	if err = httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if membership == spec.Invite && body.UserID == "" && (body.IDServer != "" || body.Medium != "" || body.Address != "") {
		if err = rm.requireJoined(r.Context(), roomID, dev.UserID); err != nil {
			return httputil.Response{}, err
		}
		mxid, err := rm.invite3PID(r, roomID, dev.UserID, threePIDInvite{IDServer: body.IDServer, IDAccessToken: body.IDAccessToken, Medium: body.Medium, Address: body.Address})
		if err != nil || mxid == "" {
			return httputil.OK(struct{}{}), err
		}
		body.UserID = mxid
	}
	if _, err = spec.NewUserID(body.UserID, true); err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("user_id must be a valid user ID")
	}
	if err = rm.requireJoined(r.Context(), roomID, dev.UserID); err != nil {
		return httputil.Response{}, err
	}
	target, err := rm.membership(r.Context(), roomID, body.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	switch membership {
	case spec.Invite:
		if target.Membership == spec.Join {
			return httputil.Response{}, matrixerr.Forbidden(body.UserID + " is already in the room")
		}
		if target.Membership == spec.Ban {
			return httputil.Response{}, matrixerr.Forbidden(body.UserID + " is banned from the room")
		}
	case "kick":
		if target.Membership != spec.Join && target.Membership != spec.Invite && target.Membership != spec.Knock {
			return httputil.Response{}, matrixerr.Forbidden(body.UserID + " is not in the room")
		}
		membership = spec.Leave
	case "unban":
		if target.Membership != spec.Ban {
			return httputil.Response{}, matrixerr.Forbidden(body.UserID + " is not banned")
		}
		membership = spec.Leave
	}
	if membership == spec.Invite {
		if err = rm.inviteUser(r.Context(), roomID, dev.UserID, body.UserID, memberContent{Membership: spec.Invite, Reason: body.Reason}); err != nil {
			return httputil.Response{}, err
		}
		return httputil.OK(struct{}{}), nil
	}
	if _, err = rm.setMembership(r.Context(), roomID, dev.UserID, body.UserID, memberContent{Membership: membership, Reason: body.Reason}); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// inviteUser sends sender's invite of invitee: through the invitee's server for another
// server's user, after asking the application services about a local one.
func (rm *Rooms) inviteUser(ctx context.Context, roomID, sender, invitee string, c memberContent) error {
	if !rm.isLocalUser(invitee) {
		return rm.inviteRemote(ctx, roomID, sender, invitee, c)
	}
	if err := rm.askAppServiceForUser(ctx, invitee); err != nil {
		return err
	}
	_, err := rm.setMembership(ctx, roomID, sender, invitee, c)
	return err
}

// isLocalUser reports whether userID is a valid user ID of this server.
func (rm *Rooms) isLocalUser(userID string) bool {
	uid, err := spec.NewUserID(userID, true)
	return err == nil && uid.Domain() == rm.ServerName
}

// inviteRemote invites a user of another server: the invite must reach the invitee's
// server and carry its signature (federation invite v2, with the room's stripped state),
// or the invitee could never join. An invite event made here alone would be stored but
// never delivered, so without federation there is no such invite (the roomserver refuses
// local invites of other servers' users too).
func (rm *Rooms) inviteRemote(ctx context.Context, roomID, sender, invitee string, c memberContent) error {
	if rm.Federation == nil {
		return matrixerr.Forbidden("users of other servers cannot be invited: this server does not federate")
	}
	content, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = rm.Federation.PerformInvite(ctx, &fapi.PerformInviteRequest{RoomID: roomID, Sender: sender, UserID: invitee, Content: content})
	return err
}

// Invite is POST /rooms/{roomId}/invite.
func (rm *Rooms) Invite(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	return rm.targetAction(r, dev, spec.Invite)
}

// Kick is POST /rooms/{roomId}/kick.
func (rm *Rooms) Kick(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	return rm.targetAction(r, dev, "kick")
}

// Ban is POST /rooms/{roomId}/ban.
func (rm *Rooms) Ban(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	return rm.targetAction(r, dev, spec.Ban)
}

// Unban is POST /rooms/{roomId}/unban.
func (rm *Rooms) Unban(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	return rm.targetAction(r, dev, "unban")
}

// ReflectProfile sends a new member event into every room the user is joined to, carrying
// their current display name and avatar. It is the userapi's ProfileChanged hook.
func (rm *Rooms) ReflectProfile(ctx context.Context, userID string) error {
	res, err := rm.RSAPI.QueryRoomsForUser(ctx, &rsapi.QueryRoomsForUserRequest{UserID: userID, Membership: spec.Join})
	if err != nil {
		return err
	}
	for _, roomID := range res.RoomIDs {
		if _, err := rm.setMembership(ctx, roomID, userID, userID, memberContent{Membership: spec.Join}); err != nil {
			return err
		}
	}
	return nil
}

// membershipBody is the optional body of /join and /knock: the reason, and the other keys.
type membershipBody struct {
	Reason string
	Extra  map[string]json.RawMessage
}

// decodeMembershipBody reads the optional body of /join and /knock.
func decodeMembershipBody(r *http.Request) (membershipBody, error) {
	var body membershipBody
	if err := decodeOptional(r, &body.Extra); err != nil {
		return body, err
	}
	if raw, ok := body.Extra["reason"]; ok {
		if err := json.Unmarshal(raw, &body.Reason); err != nil {
			return body, matrixerr.BadJSON("reason must be a string")
		}
	}
	return body, nil
}

// membershipTarget resolves the room ID or alias of /join and /knock (an alias to its room
// ID and the servers the directory names) and decodes the optional body.
func (rm *Rooms) membershipTarget(r *http.Request, idOrAlias string) (string, []string, membershipBody, error) {
	var body membershipBody
	roomID, servers := idOrAlias, []string(nil)
	if strings.HasPrefix(idOrAlias, "#") {
		alias, err := roomalias.Parse(idOrAlias)
		if err != nil {
			return "", nil, body, matrixerr.InvalidParam("invalid room alias")
		}
		if roomID, servers, err = rm.resolveAlias(r.Context(), alias); err != nil {
			return "", nil, body, err
		}
	}
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", nil, body, matrixerr.InvalidParam("invalid room ID or alias")
	}
	body, err := decodeMembershipBody(r)
	if err != nil {
		return "", nil, body, err
	}
	return roomID, servers, body, nil
}

// Knock is POST /knock/{roomIdOrAlias}: the user asks to be invited to a room whose join
// rule is knock or knock_restricted (room versions 7 and later; the auth rules refuse the
// others with 403). A room this server is not in is knocked on through another server
// (make_knock, send_knock): the server_name (or via) query parameters, the servers the
// alias resolved to and the room ID's server, in that order.
func (rm *Rooms) Knock(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	ctx := r.Context()
	roomID, servers, body, err := rm.membershipTarget(r, httputil.Vars(r)["roomIDOrAlias"])
	if err != nil {
		return httputil.Response{}, err
	}
	in, err := rm.serverInRoom(ctx, roomID)
	if err != nil {
		return httputil.Response{}, err
	}
	if !in {
		q := r.URL.Query()
		hints := append(append(q["server_name"], q["via"]...), servers...)
		if err = rm.knockRemote(ctx, hints, roomID, dev.UserID, body); err != nil {
			return httputil.Response{}, err
		}
		return httputil.OK(map[string]string{"room_id": roomID}), nil
	}
	m, err := rm.membership(ctx, roomID, dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	switch m.Membership {
	case spec.Join, spec.Invite, spec.Ban:
		return httputil.Response{}, matrixerr.Forbidden("you cannot knock: your membership in the room is " + m.Membership)
	}
	if _, err = rm.setMembership(ctx, roomID, dev.UserID, dev.UserID, memberContent{Membership: spec.Knock, Reason: body.Reason, Extra: body.Extra}); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"room_id": roomID}), nil
}
