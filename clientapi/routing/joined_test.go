package routing

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// membershipAPI answers membership queries from a map and counts them; inputs succeed.
type membershipAPI struct {
	rsapi.ClientRoomserverAPI
	mu         sync.Mutex
	membership map[string]string
	queries    int
}

func (m *membershipAPI) QueryMembershipForUser(_ context.Context, req *rsapi.QueryMembershipForUserRequest) (*rsapi.QueryMembershipForUserResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.queries++
	return &rsapi.QueryMembershipForUserResponse{RoomExists: true, Membership: m.membership[req.UserID]}, nil
}

func (m *membershipAPI) set(userID, membership string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.membership[userID] = membership
}

func (m *membershipAPI) InputRoomEvents(_ context.Context, req *rsapi.InputRoomEventsRequest) (*rsapi.InputRoomEventsResponse, error) {
	return &rsapi.InputRoomEventsResponse{Results: make([]rsapi.Result, len(req.Input.Events))}, nil
}

func TestJoinedCache(t *testing.T) {
	ctx := context.Background()
	const room, alice, bob = "!r:test", "@alice:test", "@bob:test"
	api := &membershipAPI{membership: map[string]string{alice: spec.Join}}
	rm := &Rooms{RSAPI: api}
	for range 3 {
		if err := rm.requireJoinedToWrite(ctx, room, alice); err != nil {
			t.Fatal(err)
		}
	}
	if api.queries != 1 {
		t.Fatalf("%d membership queries, want 1", api.queries)
	}
	// Not being joined is never remembered: a join is usable at once.
	for range 2 {
		var merr *matrixerr.Error
		if err := rm.requireJoinedToWrite(ctx, room, bob); !asMatrixErr(err, &merr) || merr.Code != "M_FORBIDDEN" {
			t.Fatalf("bob not joined: %v", err)
		}
	}
	api.set(bob, spec.Join)
	if err := rm.requireJoinedToWrite(ctx, room, bob); err != nil {
		t.Fatalf("bob after joining: %v", err)
	}
	// A membership event submitted here drops its target's entry.
	leave := spec.Leave
	api.set(alice, leave)
	if _, err := rm.sendProto(ctx, room, &rsapi.ProtoEvent{Sender: alice, Type: spec.MRoomMember, StateKey: &[]string{alice}[0], Content: []byte(`{"membership":"leave"}`)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := rm.requireJoinedToWrite(ctx, room, alice); err == nil {
		t.Fatal("alice may still write after leaving through this clientapi")
	}
	// Reads never use the cache.
	api.set(bob, leave)
	if err := rm.requireJoined(ctx, room, bob); err == nil {
		t.Fatal("requireJoined answered from the cache")
	}
}

// TestJoinedCacheDropsExpired: entries go within a TTL of expiring, not only once the cache
// is full; an invalidation during a query keeps its answer out.
func TestJoinedCacheDropsExpired(t *testing.T) {
	c := newJoinedCache()
	start := time.Now()
	for i := range 100 {
		key := joinedKey{"!r:test", fmt.Sprintf("@u%d:test", i)}
		_, gen := c.get(key, start)
		c.put(key, gen, start)
	}
	if ok, _ := c.get(joinedKey{"!r:test", "@u7:test"}, start.Add(joinedTTL/2)); !ok {
		t.Fatal("an entry expired before its TTL")
	}
	later := start.Add(2 * joinedTTL)
	late := joinedKey{"!r:test", "@late:test"}
	_, gen := c.get(late, later)
	c.put(late, gen, later)
	if len(c.entries) != 1 {
		t.Fatalf("%d entries two TTLs later, want 1 (the new one)", len(c.entries))
	}
	other := joinedKey{"!r:test", "@other:test"}
	_, gen = c.get(other, later)
	c.forget("!r:test", "@late:test")
	c.put(other, gen, later)
	if ok, _ := c.get(other, later); ok {
		t.Fatal("an answer from before an invalidation was stored")
	}
}
