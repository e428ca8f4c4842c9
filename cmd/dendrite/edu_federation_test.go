package main

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithsFederateEDUs: typing, receipts, presence and send-to-device cross between
// two monoliths over loopback TLS (issue 5's federation part).
func TestMonolithsFederateEDUs(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	e2e.EDUsOverFederation(t, a.URL(), string(a.name), b.URL())
}

// TestMonolithsSharePresenceOnJoin: when a user of another server joins a room, both
// servers send their users' presence to the other, so each side's initial sync shows both.
func TestMonolithsSharePresenceOnJoin(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	e2e.PresenceOnFederatedJoin(t, a.URL(), string(a.name), b.URL())
}
