// Package eventcontent type-checks the content of the state events that decide who may do
// what in a room, and of a few others whose content the server reads, against the spec's
// event schemas (data/event-schemas): a local client's malformed m.room.join_rules or
// m.room.power_levels is refused with 400 M_BAD_JSON before it reaches the auth rules,
// instead of being signed into the room or failing there with a decoder's message.
package eventcontent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/roomalias"
)

// Event types checked here that gomatrixserverlib/spec has no constant for.
const (
	MRoomServerACL = "m.room.server_acl"
)

// Validate checks the content of a state event a local client sends (stateKey nil: not a
// state event, never checked) in a room of version v. It returns nil for event types it
// does not know and a 400 M_BAD_JSON naming the offending key otherwise. Unknown keys are
// allowed, as the spec allows them.
func Validate(v gomatrixserverlib.RoomVersion, eventType string, stateKey *string, content []byte) error {
	if stateKey == nil {
		return nil
	}
	check, ok := checks[eventType]
	if !ok {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(content, &fields); err != nil || fields == nil {
		return matrixerr.BadJSON(eventType + " content must be a JSON object")
	}
	if eventType == spec.MRoomPowerLevels {
		_, err := ParsePowerLevels(v, content)
		return err
	}
	c := &checker{eventType: eventType, fields: fields}
	check(c)
	return c.err
}

var checks = map[string]func(c *checker){
	spec.MRoomPowerLevels: func(*checker) {}, // ParsePowerLevels, by room version
	spec.MRoomCreate: func(c *checker) {
		c.userID("creator", false)
		c.boolean("m.federate")
		c.str("room_version", false)
		c.str("type", false)
		c.object("predecessor", func(p *checker) {
			p.roomID("room_id", true)
			p.str("event_id", false)
		})
		c.userIDs("additional_creators")
	},
	spec.MRoomJoinRules: func(c *checker) {
		c.str("join_rule", true, spec.Public, spec.Knock, spec.Invite, "private", spec.Restricted, spec.KnockRestricted)
		c.objects("allow", func(a *checker) {
			a.str("type", true)
			a.roomID("room_id", false)
		})
	},
	spec.MRoomMember: func(c *checker) {
		c.str("membership", true, spec.Invite, spec.Join, spec.Knock, spec.Leave, spec.Ban)
		c.str("avatar_url", false)
		if string(bytes.TrimSpace(c.fields["displayname"])) != "null" {
			c.str("displayname", false)
		}
		c.boolean("is_direct")
		c.userID("join_authorised_via_users_server", false)
		c.str("reason", false)
		c.object("third_party_invite", func(t *checker) {
			t.str("display_name", true)
			t.object("signed", func(s *checker) {
				s.userID("mxid", true)
				s.str("token", true)
				if _, ok := s.fields["signatures"]; !ok {
					s.fail("signatures is required")
				}
			})
			if _, ok := t.fields["signed"]; !ok {
				t.fail("signed is required")
			}
		})
	},
	spec.MRoomHistoryVisibility: func(c *checker) {
		c.str("history_visibility", true, "invited", "joined", "shared", "world_readable")
	},
	spec.MRoomGuestAccess: func(c *checker) {
		c.str("guest_access", true, "can_join", "forbidden")
	},
	MRoomServerACL: func(c *checker) {
		// NOTSPEC: allow_ip_literals is a boolean in the spec's schema
		// (https://spec.matrix.org/v1.17/client-server-api/#mroomserver_acl), but another type is
		// accepted and counts as absent (true), as Synapse does and sytest's "/upgrade copies
		// important state to the new room" sends ("false", a string). federationapi.ACLAllows
		// reads it the same way.
		c.strs("allow")
		c.strs("deny")
	},
	spec.MRoomEncryption: func(c *checker) {
		c.str("algorithm", true)
		c.integer("rotation_period_ms")
		c.integer("rotation_period_msgs")
	},
	spec.MRoomCanonicalAlias: func(c *checker) {
		c.alias("alias")
		c.each("alt_aliases", func(key string, raw json.RawMessage) {
			if s, ok := asString(raw); !ok {
				c.fail(key + " must be a string")
			} else if _, err := roomalias.Parse(s); err != nil {
				c.fail(key + " is not a room alias")
			}
		})
	},
}

// checker checks the fields of one JSON object and keeps the first failure.
type checker struct {
	eventType string
	path      string
	fields    map[string]json.RawMessage
	err       error
}

func (c *checker) fail(msg string) {
	if c.err == nil {
		c.err = matrixerr.BadJSON(c.eventType + ": " + c.path + msg)
	}
}

// get returns a field that is present, failing when a required one is absent.
func (c *checker) get(key string, required bool) (json.RawMessage, bool) {
	raw, ok := c.fields[key]
	if !ok && required {
		c.fail(key + " is required")
	}
	return raw, ok
}

func (c *checker) str(key string, required bool, allowed ...string) {
	raw, ok := c.get(key, required)
	if !ok {
		return
	}
	s, isStr := asString(raw)
	if !isStr {
		c.fail(key + " must be a string")
		return
	}
	if len(allowed) > 0 && !slices.Contains(allowed, s) {
		c.fail(fmt.Sprintf("%s must be one of %s", key, strings.Join(allowed, ", ")))
	}
}

func (c *checker) userID(key string, required bool) {
	raw, ok := c.get(key, required)
	if !ok {
		return
	}
	if s, ok := asString(raw); !ok {
		c.fail(key + " must be a string")
	} else if _, err := spec.NewUserID(s, true); err != nil {
		c.fail(key + " is not a user ID")
	}
}

func (c *checker) roomID(key string, required bool) {
	raw, ok := c.get(key, required)
	if !ok {
		return
	}
	if s, ok := asString(raw); !ok {
		c.fail(key + " must be a string")
	} else if _, err := spec.NewRoomID(s); err != nil {
		c.fail(key + " is not a room ID")
	}
}

func (c *checker) alias(key string) {
	raw, ok := c.get(key, false)
	if !ok {
		return
	}
	if s, ok := asString(raw); !ok {
		c.fail(key + " must be a string")
	} else if _, err := roomalias.Parse(s); err != nil {
		c.fail(key + " is not a room alias")
	}
}

func (c *checker) boolean(key string) {
	raw, ok := c.get(key, false)
	if !ok {
		return
	}
	if s := string(bytes.TrimSpace(raw)); s != "true" && s != "false" {
		c.fail(key + " must be true or false")
	}
}

func (c *checker) integer(key string) {
	raw, ok := c.get(key, false)
	if !ok {
		return
	}
	if !jsonInteger.Match(bytes.TrimSpace(raw)) {
		c.fail(key + " must be an integer")
	}
}

// each calls f for every element of an array field.
func (c *checker) each(key string, f func(key string, raw json.RawMessage)) {
	raw, ok := c.get(key, false)
	if !ok {
		return
	}
	var arr []json.RawMessage
	if json.Unmarshal(raw, &arr) != nil || arr == nil {
		c.fail(key + " must be an array")
		return
	}
	for i, el := range arr {
		f(fmt.Sprintf("%s[%d]", key, i), el)
	}
}

func (c *checker) strs(key string) {
	c.each(key, func(k string, raw json.RawMessage) {
		if _, ok := asString(raw); !ok {
			c.fail(k + " must be a string")
		}
	})
}

func (c *checker) userIDs(key string) {
	c.each(key, func(k string, raw json.RawMessage) {
		if s, ok := asString(raw); !ok {
			c.fail(k + " must be a string")
		} else if _, err := spec.NewUserID(s, true); err != nil {
			c.fail(k + " is not a user ID")
		}
	})
}

// sub checks a nested object with f.
func (c *checker) sub(key string, raw json.RawMessage, f func(*checker)) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil || fields == nil {
		c.fail(key + " must be an object")
		return
	}
	s := &checker{eventType: c.eventType, path: c.path + key + ".", fields: fields}
	f(s)
	if c.err == nil {
		c.err = s.err
	}
}

func (c *checker) object(key string, f func(*checker)) {
	if raw, ok := c.get(key, false); ok {
		c.sub(key, raw, f)
	}
}

func (c *checker) objects(key string, f func(*checker)) {
	c.each(key, func(k string, raw json.RawMessage) { c.sub(k, raw, f) })
}

// asString decodes a JSON string (null is not one).
func asString(raw json.RawMessage) (string, bool) {
	var s string
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// ThirdPartySigned is the raw content.third_party_invite.signed of an m.room.member invite,
// nil for any other event: the test that picks the auth rules' third-party invite rule, in
// the roomserver's auth and in the federation API's signature checks alike.
func ThirdPartySigned(ev gomatrixserverlib.PDU) json.RawMessage {
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return nil
	}
	var c struct {
		Membership       string `json:"membership"`
		ThirdPartyInvite *struct {
			Signed json.RawMessage `json:"signed"`
		} `json:"third_party_invite"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.Membership != spec.Invite || c.ThirdPartyInvite == nil {
		return nil
	}
	return c.ThirdPartyInvite.Signed
}
