package internal

import (
	"fmt"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// TestCacheKeepsStateEventsWithinItsBudget: the parsed-event cache keeps state events (the
// auth checks' hot set) and no message events, and stays within its share of the budget
// however many state events pass through it.
func TestCacheKeepsStateEventsWithinItsBudget(t *testing.T) {
	const budget = 4 << 20
	c := newCache(nil, caching.Budget(budget), nil)
	key := roomtest.NewKey(t)
	version := gomatrixserverlib.RoomVersionV10
	create := roomtest.CreateEvent(t, key, "a.test", version, alice, "!room:a.test")
	r := &roomtest.Remote{T: t, Key: key, Origin: "a.test", Version: version, RoomID: create.RoomID().String()}

	msg := r.Event(alice, "m.room.message", nil, map[string]any{"body": "hi"}, 2, []gomatrixserverlib.PDU{create}, nil)
	c.putEvent(1, msg)
	if _, ok := c.events.Get(1); ok {
		t.Fatal("a message event was cached")
	}
	c.putEvent(2, create)
	if _, ok := c.events.Get(2); !ok {
		t.Fatal("the create event was not cached")
	}

	// 2,000 member events of ~2 KiB each: ~4 MiB parsed, twice the cache's share.
	pad := strings.Repeat("x", 2000)
	for i := range 2000 {
		target := fmt.Sprintf("@u%d:a.test", i)
		ev := r.Event(alice, spec.MRoomMember, &target, map[string]any{"membership": "join", "displayname": pad}, int64(i+3), []gomatrixserverlib.PDU{create}, nil)
		c.putEvent(types.EventNID(i+3), ev)
		if b := c.events.Bytes(); b > int64(budget*eventsCacheShare) {
			t.Fatalf("after %d member events the cache holds %d bytes, over its %d", i+1, b, int64(budget*eventsCacheShare))
		}
	}
	if c.events.Bytes() < int64(budget*eventsCacheShare)/2 {
		t.Fatalf("the cache holds only %d bytes of its %d", c.events.Bytes(), int64(budget*eventsCacheShare))
	}
	c.dropEvents([]types.EventNID{2})
	if _, ok := c.events.Get(2); ok {
		t.Fatal("a dropped event is still cached")
	}
}
