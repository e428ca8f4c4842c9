package internal

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
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

// TestEventCostIsHonest: eventCost, the parsed-event cache's weight, is within 25% below
// and 50% above what parsed member events of a typical size take in memory, for events
// built and signed here (what a local join caches) and for events parsed from storage.
func TestEventCostIsHonest(t *testing.T) {
	key := roomtest.NewKey(t)
	version := gomatrixserverlib.RoomVersionV10
	create := roomtest.CreateEvent(t, key, "a.test", version, alice, "!room:a.test")
	r := &roomtest.Remote{T: t, Key: key, Origin: "a.test", Version: version, RoomID: create.RoomID().String()}
	const n = 2000
	built := func(i int) gomatrixserverlib.PDU {
		target := fmt.Sprintf("@user%06d:a.test", i)
		return r.Event(alice, spec.MRoomMember, &target, map[string]any{"membership": "join", "displayname": fmt.Sprintf("user%06d", i)},
			int64(i+3), []gomatrixserverlib.PDU{create}, nil)
	}
	parsed := func(i int) gomatrixserverlib.PDU {
		ev := built(i)
		pdu, err := api.ParseTrusted(string(version), ev.EventID(), ev.JSON(), false)
		if err != nil {
			t.Fatal(err)
		}
		return pdu
	}
	for name, newEvent := range map[string]func(int) gomatrixserverlib.PDU{"built": built, "parsed": parsed} {
		keep := make([]gomatrixserverlib.PDU, n)
		before := heapInUse()
		for i := range keep {
			keep[i] = newEvent(i)
		}
		each := (heapInUse() - before) / n
		est := eventCost(0, keep[n/2])
		runtime.KeepAlive(keep)
		t.Logf("%s: a member event of %d bytes of JSON takes %d bytes, estimated %d", name, len(keep[n/2].JSON()), each, est)
		if float64(est) < 0.75*float64(each) || float64(est) > 1.5*float64(each) {
			t.Errorf("%s: a member event takes %d bytes, estimated %d", name, each, est)
		}
	}
}

// heapInUse is the heap's live bytes after a full collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
