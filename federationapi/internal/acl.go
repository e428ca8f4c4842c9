package internal

import (
	"context"
	"encoding/json"
	"net"
	"regexp"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// MRoomServerACL is the state event type of a room's server ACL.
const MRoomServerACL = "m.room.server_acl"

// CheckACL applies the server ACL among a room's state events to origin: 403 M_FORBIDDEN
// when it denies origin (spec "Server Access Control Lists").
func CheckACL(state []rsapi.Event, origin spec.ServerName) error {
	for _, ev := range state {
		if ev.Type() == MRoomServerACL && ev.StateKeyEquals("") && !ACLAllows(ev.Content(), origin) {
			return matrixerr.Forbidden("your server is denied by the room's server ACL")
		}
	}
	return nil
}

// RoomACL applies the room's current server ACL to origin (CheckACL), reading only that
// state event.
func RoomACL(ctx context.Context, rooms rsapi.QueryAPI, roomID string, origin spec.ServerName) error {
	res, err := rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: roomID, Tuples: []rsapi.StateKeyTuple{{EventType: MRoomServerACL}}})
	if err != nil {
		return err
	}
	return CheckACL(res.StateEvents, origin)
}

// ACLAllows applies an m.room.server_acl content to a server name (spec "Server Access
// Control Lists"): the port is ignored, IP literals are denied unless allow_ip_literals
// (default true; a value that is not a boolean counts as absent, as eventcontent accepts it),
// then a matching deny glob denies and a matching allow glob allows; without a matching
// allow glob the server is denied.
func ACLAllows(content []byte, server spec.ServerName) bool {
	var acl struct {
		Allow           []string        `json:"allow"`
		Deny            []string        `json:"deny"`
		AllowIPLiterals json.RawMessage `json:"allow_ip_literals"`
	}
	if err := json.Unmarshal(content, &acl); err != nil {
		return true // an ACL that does not parse applies no restriction
	}
	host := string(server)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if net.ParseIP(host) != nil && string(acl.AllowIPLiterals) == "false" {
		return false
	}
	for _, g := range acl.Deny {
		if globMatch(g, host) {
			return false
		}
	}
	for _, g := range acl.Allow {
		if globMatch(g, host) {
			return true
		}
	}
	return false
}

// globMatch matches s against a glob where * is any run of characters and ? any one.
func globMatch(glob, s string) bool {
	re := "^" + strings.ReplaceAll(strings.ReplaceAll(regexp.QuoteMeta(glob), `\*`, ".*"), `\?`, ".") + "$"
	ok, err := regexp.MatchString(re, s)
	return err == nil && ok
}
