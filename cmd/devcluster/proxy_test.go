package main

import "testing"

// TestRoute pins the front proxy's routing table (docs/polylith.md).
func TestRoute(t *testing.T) {
	for path, want := range map[string]string{
		"/_matrix/client/v3/sync":                               toSyncAPI,
		"/_matrix/client/r0/sync":                               toSyncAPI,
		"/_matrix/client/r0/events":                             toSyncAPI,
		"/_matrix/client/v3/rooms/!a%3Ab/messages":              toSyncAPI,
		"/_matrix/client/v3/rooms/!a%3Ab/context/$e%3Ab":        toSyncAPI,
		"/_matrix/client/v3/rooms/!a%2Fb%3Ab/context/$e":        toSyncAPI,
		"/_matrix/client/versions":                              toClientAPI,
		"/_matrix/client/v3/login":                              toClientAPI,
		"/_matrix/client/v3/rooms/!a%3Ab/send/m.room.message/1": toClientAPI,
		"/_matrix/client/v3/rooms/!a%3Ab/state/m.room.topic/":   toClientAPI,
		"/_matrix/client/v3/rooms/!a%3Ab/messages/extra":        toClientAPI,
		"/_matrix/client/v3/user/@a%3Ab/filter":                 toClientAPI,
		"/_synapse/admin/v1/register":                           toClientAPI,
		"/_matrix/federation/v1/version":                        toFederationAPI,
		"/_matrix/key/v2/server":                                toFederationAPI,
		"/metrics":                                              "",
	} {
		if got := route(path); got != want {
			t.Errorf("route(%q) = %q, want %q", path, got, want)
		}
	}
}
