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
