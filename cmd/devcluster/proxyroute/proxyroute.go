// Package proxyroute is the front proxy's routing table: which polylith process serves a
// public request. cmd/devcluster's proxy routes with it, and docker/'s tests check that
// docker/nginx.conf and the docs route every path the same way.
//
// Routing works on the path as the client sent it (percent-encoded), as the components'
// routers match it: a room ID with an encoded slash ("!a%2Fb:example.org") is one path
// segment, never two.
package proxyroute

import "strings"

// Processes the front proxy routes to: the components with a public listener.
const (
	ClientAPI     = "clientapi"
	SyncAPI       = "syncapi"
	FederationAPI = "federationapi"
	MediaAPI      = "mediaapi"
	PushServer    = "pushserver"
	SearchAPI     = "searchapi"
)

// Rule is one row of the routing table. Pattern is an escaped path pattern: a segment in
// braces ("{roomId}") matches exactly one non-empty segment, a trailing "*" matches any
// rest (including none); every other segment matches itself.
type Rule struct {
	Pattern string
	Process string
}

// Rules is the routing table, tried in order; the first matching rule wins.
var Rules = []Rule{
	{"/_matrix/client/{version}/sync", SyncAPI},
	{"/_matrix/client/{version}/events", SyncAPI},
	{"/_matrix/client/{version}/rooms/{roomId}/messages", SyncAPI},
	{"/_matrix/client/{version}/rooms/{roomId}/context/{eventId}", SyncAPI},
	{"/_matrix/client/{version}/rooms/{roomId}/event/{eventId}", SyncAPI},
	{"/_matrix/client/{version}/user_directory/search", SyncAPI},
	{"/_matrix/client/{version}/rooms/{roomId}/relations/*", SyncAPI},
	{"/_matrix/client/{version}/rooms/{roomId}/threads", SyncAPI},
	{"/_matrix/client/{version}/keys/changes", SyncAPI},
	{"/_matrix/client/{version}/peek/{roomIDOrAlias}", SyncAPI},
	{"/_matrix/client/{version}/rooms/{roomId}/unpeek", SyncAPI},
	{"/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", SyncAPI},
	{"/_matrix/client/{version}/notifications", PushServer},
	{"/_matrix/client/{version}/pushers", PushServer},
	{"/_matrix/client/{version}/pushers/set", PushServer},
	{"/_matrix/client/{version}/search", SearchAPI},
	{"/_matrix/client/{version}/media/*", MediaAPI},
	{"/_matrix/media/*", MediaAPI},
	{"/_matrix/client/*", ClientAPI},
	{"/_synapse/*", ClientAPI},
	{"/_matrix/federation/v1/media/*", MediaAPI},
	{"/_matrix/federation/*", FederationAPI},
	{"/_matrix/key/*", FederationAPI},
}

// Route is the process that serves a request for escapedPath (the path as sent, without the
// query), or "" when no process does.
func Route(escapedPath string) string {
	for _, r := range Rules {
		if Match(r.Pattern, escapedPath) {
			return r.Process
		}
	}
	return ""
}

// Match reports whether escapedPath matches a Rule's pattern.
func Match(pattern, escapedPath string) bool {
	pat := strings.Split(pattern, "/")
	got := strings.Split(escapedPath, "/")
	for i, p := range pat {
		if p == "*" && i == len(pat)-1 {
			return len(got) > i
		}
		if i >= len(got) {
			return false
		}
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			if got[i] == "" {
				return false
			}
			continue
		}
		if p != got[i] {
			return false
		}
	}
	return len(got) == len(pat)
}
