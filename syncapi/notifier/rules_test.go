package notifier_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/syncapi/notifier"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// TestNotifyWakes: which users a committed write wakes. Each case starts from one room,
// !r, with local alice joined and local bob invited, !other with local carol, and remote
// @rem:y in !r; dave is local and in no room. Every local user has a waiting stream; a user
// counts as woken when their stream moved past the position before the write.
func TestNotifyWakes(t *testing.T) {
	const alice, bob, carol, dave, remote = "@alice:x", "@bob:x", "@carol:x", "@dave:x", "@rem:y"
	local := []string{alice, bob, carol, dave}
	cases := []struct {
		name    string
		applied storage.Applied
		want    []string
	}{
		{"a room event wakes its joined and invited local members",
			storage.Applied{Stream: storage.StreamRoomEvents, Rooms: []string{"!r"}}, []string{alice, bob}},
		{"an event of another room wakes only its members",
			storage.Applied{Stream: storage.StreamRoomEvents, Rooms: []string{"!other"}}, []string{carol}},
		{"a join wakes the joiner and the room's members",
			storage.Applied{Stream: storage.StreamRoomEvents, Rooms: []string{"!r"}, Members: []storage.MemberChange{{RoomID: "!r", UserID: dave, Membership: spec.Join}}},
			[]string{alice, bob, dave}},
		{"a leave wakes the leaver with the members before it",
			storage.Applied{Stream: storage.StreamRoomEvents, Rooms: []string{"!r"}, Members: []storage.MemberChange{{RoomID: "!r", UserID: alice, Membership: spec.Leave}}},
			[]string{alice, bob}},
		{"a kick wakes its target though no longer a member",
			storage.Applied{Stream: storage.StreamRoomEvents, Members: []storage.MemberChange{{RoomID: "!other", UserID: carol, Membership: spec.Leave}}},
			[]string{carol}},
		{"account data wakes only its user",
			storage.Applied{Stream: storage.StreamAccountData, Users: []string{dave}}, []string{dave}},
		{"typing wakes the room's members",
			storage.Applied{Stream: storage.StreamTyping, EphemeralRooms: []string{"!other"}}, []string{carol}},
		{"a remote user's key change wakes the local users sharing a room",
			storage.Applied{Stream: storage.StreamKeyChanges, KeyUsers: []string{remote}}, []string{alice, bob}},
		{"a local user's key change wakes them and their room-mates",
			storage.Applied{Stream: storage.StreamKeyChanges, KeyUsers: []string{carol}}, []string{carol}},
		{"a peek wakes the peeker with the room's events from then on",
			storage.Applied{Stream: storage.StreamRoomEvents, Rooms: []string{"!other"}, Peeks: []storage.Peek{{RoomID: "!other", UserID: dave}}},
			[]string{carol, dave}},
		{"a write at position 0 wakes nobody",
			storage.Applied{Stream: storage.StreamRoomEvents, Rooms: []string{"!r"}}, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := setup(t, local, remote)
			before := int64(100)
			tc.applied.Position = before + 1
			if i == len(cases)-1 {
				tc.applied.Position = 0
			}
			n.Notify(&tc.applied)
			if got := woken(n, local, before); !slices.Equal(got, tc.want) {
				t.Fatalf("woken %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPresenceWakesRoomMates: a presence change wakes everyone sharing a room with its
// user, gathered for notifier.PresenceDelay, and nobody else.
func TestPresenceWakesRoomMates(t *testing.T) {
	const alice, bob, carol, dave, remote = "@alice:x", "@bob:x", "@carol:x", "@dave:x", "@rem:y"
	local := []string{alice, bob, carol, dave}
	n := setup(t, local, remote)
	n.Notify(&storage.Applied{Stream: storage.StreamPresence, PresenceUsers: []string{remote}, Position: 101})
	// The flush wakes everyone gathered at once: once alice is woken, the others' wake-ups
	// have happened or never will.
	if !n.Wait(context.Background(), alice, 100, time.Minute) {
		t.Fatal("alice not woken by her room-mate's presence")
	}
	if got := woken(n, local, 100); !slices.Equal(got, []string{alice, bob}) {
		t.Fatalf("woken %v, want alice and bob", got)
	}
}

// TestChanged: a sync skips a kind of change only when none can exist after its position.
func TestChanged(t *testing.T) {
	n := notifier.New("x", nil)
	n.Notify(&storage.Applied{Stream: storage.StreamTyping, EphemeralRooms: []string{"!r"}, Position: 7})
	for _, tc := range []struct {
		stream string
		since  int64
		want   bool
	}{
		{storage.StreamTyping, 6, true},
		{storage.StreamTyping, 7, false},
		{storage.StreamRoomEvents, 0, false},
	} {
		if got := n.Changed(tc.stream, tc.since); got != tc.want {
			t.Errorf("Changed(%s, %d) = %v, want %v", tc.stream, tc.since, got, tc.want)
		}
	}
	// A write under way may have committed changes Notify has not heard of: its kind
	// counts as changed until the write ends, and only its kind.
	end := n.Writing(storage.StreamTyping)
	if !n.Changed(storage.StreamTyping, 7) || n.Changed(storage.StreamRoomEvents, 0) {
		t.Fatal("a typing write under way: typing must count as changed, room events not")
	}
	n.Notify(&storage.Applied{Stream: storage.StreamTyping, EphemeralRooms: []string{"!r"}, Position: 8})
	end()
	end() // ending twice ends once
	if n.Changed(storage.StreamTyping, 8) {
		t.Fatal("typing still changed after the write ended")
	}
	other := n.Writing(storage.StreamTyping)
	defer other()
	end()
	if !n.Changed(storage.StreamTyping, 8) {
		t.Fatal("ending one write twice ended another")
	}
}

// setup is a notifier with the memberships TestNotifyWakes describes and a stream at
// position 100 for every local user.
func setup(t *testing.T, local []string, remote string) *notifier.Notifier {
	t.Helper()
	n := notifier.New("x", nil)
	n.Notify(&storage.Applied{Stream: storage.StreamRoomEvents, Position: 100, Members: []storage.MemberChange{
		{RoomID: "!r", UserID: local[0], Membership: spec.Join},
		{RoomID: "!r", UserID: local[1], Membership: spec.Invite},
		{RoomID: "!other", UserID: local[2], Membership: spec.Join},
		{RoomID: "!r", UserID: remote, Membership: spec.Join},
	}})
	if got := woken(n, local, 99); len(got) != len(local) {
		t.Fatalf("streams at 100: %v", got)
	}
	return n
}

// woken are the users (in the order given) whose streams moved past since: a Wait with an
// ended context returns at once, true only if it has something past since.
func woken(n *notifier.Notifier, users []string, since int64) []string {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out []string
	for _, u := range users {
		if n.Wait(ctx, u, since, time.Hour) {
			out = append(out, u)
		}
	}
	return out
}
