package api

import (
	"encoding/json"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// JoinRule is what an m.room.join_rules event says: the rule, and for restricted and
// knock_restricted rooms the rooms whose members may join (the m.room_membership
// conditions of allow; conditions of other types are left out).
type JoinRule struct {
	Rule         string
	AllowedRooms []string
}

// Restricted reports whether joining needs an allowed room's membership or an invite.
func (j JoinRule) Restricted() bool {
	return j.Rule == spec.Restricted || j.Rule == spec.KnockRestricted
}

// ParseJoinRule reads an m.room.join_rules content; unreadable content is no rule.
func ParseJoinRule(content []byte) JoinRule {
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if json.Unmarshal(content, &c) != nil {
		return JoinRule{}
	}
	out := JoinRule{Rule: c.JoinRule}
	for _, a := range c.Allow {
		if a.Type == "m.room_membership" && a.RoomID != "" {
			out.AllowedRooms = append(out.AllowedRooms, a.RoomID)
		}
	}
	return out
}

// JoinAuthoriser is the user who may vouch for a restricted join
// (join_authorised_via_users_server): the first, in sorted order, of server's users joined
// to the room (in state, the room's current state) whose power level reaches invite, or
// who is a creator in room versions where creators outrank everyone. "" when none may.
func JoinAuthoriser(state []gomatrixserverlib.PDU, server spec.ServerName) string {
	var create, pl gomatrixserverlib.PDU
	var members []string
	for _, e := range state {
		switch {
		case e.Type() == spec.MRoomCreate && e.StateKeyEquals(""):
			create = e
		case e.Type() == spec.MRoomPowerLevels && e.StateKeyEquals(""):
			pl = e
		case e.Type() == spec.MRoomMember && e.StateKey() != nil:
			uid, err := spec.NewUserID(*e.StateKey(), true)
			if m, _ := e.Membership(); err == nil && m == spec.Join && uid.Domain() == server {
				members = append(members, *e.StateKey())
			}
		}
	}
	if create == nil {
		return ""
	}
	top := map[string]bool{}
	if v, err := gomatrixserverlib.GetRoomVersion(create.Version()); err == nil && v.PrivilegedCreators() {
		top[string(create.SenderID())] = true
		var c struct {
			AdditionalCreators []string `json:"additional_creators"`
		}
		if json.Unmarshal(create.Content(), &c) == nil {
			for _, u := range c.AdditionalCreators {
				top[u] = true
			}
		}
	}
	var levels *gomatrixserverlib.PowerLevelContent
	if pl != nil {
		if l, err := gomatrixserverlib.NewPowerLevelContentFromEvent(pl); err == nil {
			levels = &l // unreadable power levels leave only the creators able to invite
		}
	}
	slices.Sort(members)
	for _, u := range members {
		if top[u] || levels != nil && levels.UserLevel(spec.SenderID(u)) >= levels.Invite {
			return u
		}
	}
	return ""
}
