package routing

import (
	"context"
	"crypto/ed25519"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/eventlog"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// noRooms is a roomserver that stores no rooms yet.
type noRooms struct{}

func (noRooms) QueryRooms(context.Context, *rsapi.QueryRoomsRequest) (*rsapi.QueryRoomsResponse, error) {
	return &rsapi.QueryRoomsResponse{}, nil
}

// TestNewRoomsSpreadOverPartitions: the room IDs createRoom makes (random ones before v12,
// create event hashes from v12) are routed, by the hash every process uses, to partitions
// that hold within one of N/P rooms each, on 16 partitions and on 5.
func TestNewRoomsSpreadOverPartitions(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, partitions := range []int32{16, 5} {
		for _, ver := range []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV12} {
			rm := &Rooms{ServerName: "test", KeyID: "ed25519:1", PrivateKey: key,
				Placement: &rsapi.Placement{Partitions: partitions, Rooms: noRooms{}}}
			verImpl := gomatrixserverlib.MustGetRoomVersion(ver)
			const rooms = 43
			counts := make([]int, partitions)
			for range rooms {
				q, err := rm.Placement.Reserve(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				create, roomID, err := rm.buildCreate("@alice:test", "", q, verImpl, nil)
				if err != nil {
					t.Fatal(err)
				}
				if create.RoomID().String() != roomID {
					t.Fatalf("create event in %s, room %s", create.RoomID(), roomID)
				}
				counts[eventlog.PartitionFor([]byte(roomID), partitions)]++
			}
			if lo, hi := slices.Min(counts), slices.Max(counts); hi-lo > 1 {
				t.Errorf("room version %s, %d partitions: %d rooms landed %v", ver, partitions, rooms, counts)
			}
		}
	}
}
