package main

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithsFederateKeys runs the key story across two monoliths over loopback TLS
// (issue 9's federation part).
func TestMonolithsFederateKeys(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	e2e.KeysOverFederation(t, a.URL(), string(a.name), b.URL())
}
