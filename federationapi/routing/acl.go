package routing

import (
	"encoding/json"
	"net"
	"regexp"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// aclAllows applies an m.room.server_acl content to a server name (spec "Server Access
// Control Lists"): the port is ignored, IP literals are denied unless allow_ip_literals
// (default true), then a matching deny glob denies and a matching allow glob allows;
// without a matching allow glob the server is denied.
func aclAllows(content []byte, server spec.ServerName) bool {
	var acl struct {
		Allow           []string `json:"allow"`
		Deny            []string `json:"deny"`
		AllowIPLiterals *bool    `json:"allow_ip_literals"`
	}
	if err := json.Unmarshal(content, &acl); err != nil {
		return true // an ACL that does not parse applies no restriction
	}
	host := string(server)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if net.ParseIP(host) != nil && acl.AllowIPLiterals != nil && !*acl.AllowIPLiterals {
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
