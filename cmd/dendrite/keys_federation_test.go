package main

import (
	"testing"

	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithsFederateKeys runs the key story across two monoliths over loopback TLS
// (issue 9's federation part).
func TestMonolithsFederateKeys(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	e2e.KeysOverFederation(t, a.URL(), string(a.name), b.URL())
}

// TestMonolithsDeviceListsAfterLeaving: a server that stops sharing every room with another
// server's user marks its copy of their device list stale, and fetches it again at the next
// /keys/query (both engines).
func TestMonolithsDeviceListsAfterLeaving(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			start := func() *fedServer { return startFedServer(t) }
			if engine == "postgres" {
				start = func() *fedServer { return startFedServerWith(t, test.PostgresDSN(t), "") }
			}
			a, b := start(), start()
			e2e.DeviceListsAfterLeaving(t, a.URL(), string(a.name), b.URL(), string(b.name))
		})
	}
}

// TestMonolithsKeysVerbatim: keys carrying fields the spec does not name and unusual
// content reach another server's client as they were signed, through /keys/query and
// /keys/claim, and their signatures verify.
func TestMonolithsKeysVerbatim(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	e2e.KeysVerbatimOverFederation(t, a.URL(), string(a.name), b.URL())
}

// TestMonolithsSignaturesOnRemoteKeys: a user's signature on another server's user's master
// key is stored and shown to her alone.
func TestMonolithsSignaturesOnRemoteKeys(t *testing.T) {
	a, b := startFedServer(t), startFedServer(t)
	e2e.SignaturesOnRemoteKeys(t, a.URL(), b.URL())
}
