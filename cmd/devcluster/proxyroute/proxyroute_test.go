package proxyroute

import "testing"

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, path string
		want          bool
	}{
		{"/_matrix/client/{version}/sync", "/_matrix/client/v3/sync", true},
		{"/_matrix/client/{version}/sync", "/_matrix/client//sync", false},
		{"/_matrix/client/{version}/sync", "/_matrix/client/v3/sync/", false},
		{"/_matrix/client/{version}/rooms/{roomId}/messages", "/_matrix/client/v3/rooms/!a%2Fb%3Ac/messages", true},
		{"/_matrix/client/{version}/rooms/{roomId}/messages", "/_matrix/client/v3/rooms/!a/b%3Ac/messages", false},
		{"/_matrix/client/*", "/_matrix/client/", true},
		{"/_matrix/client/*", "/_matrix/client/v3/a/b", true},
		{"/_matrix/client/*", "/_matrix/client", false},
		{"/_matrix/client/*", "/_matrix/clientx/", false},
	} {
		if got := Match(c.pattern, c.path); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.path, got, c.want)
		}
	}
}
