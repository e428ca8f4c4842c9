package api

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// roomList serves QueryRooms from a sorted list of room IDs, in pages, as a roomserver does.
type roomList struct {
	ids   []string
	pages int
}

func (l *roomList) QueryRooms(_ context.Context, req *QueryRoomsRequest) (*QueryRoomsResponse, error) {
	l.pages++
	i, _ := slices.BinarySearch(l.ids, req.AfterRoomID)
	if i < len(l.ids) && l.ids[i] == req.AfterRoomID {
		i++
	}
	n := min(TimelinePage(req.Limit), len(l.ids)-i)
	return &QueryRoomsResponse{RoomIDs: l.ids[i : i+n]}, nil
}

// spread reports the smallest and largest count.
func spread(counts []int64) (int64, int64) {
	return slices.Min(counts), slices.Max(counts)
}

// TestPlacementEven: N rooms placed on P partitions land within one of N/P on each, and on
// each of S shards (S dividing P; shard i owns the partitions p with p mod S = i) within one
// of N/S, whatever N.
func TestPlacementEven(t *testing.T) {
	const partitions = 16
	for _, n := range []int{1, 7, 16, 40, 41, 100} {
		p := &Placement{Partitions: partitions, Rooms: &roomList{}}
		perPartition := make([]int64, partitions)
		for range n {
			q, err := p.Reserve(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			perPartition[q]++
		}
		if lo, hi := spread(perPartition); hi-lo > 1 {
			t.Errorf("%d rooms: partitions hold %d to %d rooms: %v", n, lo, hi, perPartition)
		}
		for _, shards := range []int{2, 4, 8} {
			perShard := make([]int64, shards)
			for q, c := range perPartition {
				perShard[q%shards] += c
			}
			if lo, hi := spread(perShard); hi-lo > 1 {
				t.Errorf("%d rooms on %d shards: shards hold %d to %d rooms: %v", n, shards, lo, hi, perShard)
			}
		}
	}
}

// TestPlacementCountsStoredRooms: the rooms the roomserver stores (listed page by page) are
// counted, so new rooms fill the emptiest partitions first and the total evens out.
func TestPlacementCountsStoredRooms(t *testing.T) {
	const partitions = 16
	// 1,200 stored rooms, 600 on each of partitions 0 and 1 (more than two pages of QueryRooms).
	var ids []string
	stored := make([]int64, partitions)
	for i := 0; len(ids) < 1200; i++ {
		id := fmt.Sprintf("!old%d:test", i)
		if q := eventlog.PartitionFor([]byte(id), partitions); q <= 1 && stored[q] < 600 {
			ids = append(ids, id)
			stored[q]++
		}
	}
	slices.Sort(ids)
	lister := &roomList{ids: ids}
	p := &Placement{Partitions: partitions, Rooms: lister}
	total := slices.Clone(stored)
	for range 14 * 600 {
		q, err := p.Reserve(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if q <= 1 && total[q] < slices.Max(total[2:]) {
			t.Fatalf("a new room went to partition %d (%d rooms) while others had fewer: %v", q, total[q], total)
		}
		total[q]++
	}
	if lister.pages != 3 {
		t.Errorf("the stored rooms were listed in %d pages, want 3 (once, at the first room)", lister.pages)
	}
	if lo, hi := spread(total); hi-lo > 1 {
		t.Errorf("after the new rooms partitions hold %d to %d rooms: %v", lo, hi, total)
	}
}

// TestPlacementRelease: a reservation whose room was never created is given back.
func TestPlacementRelease(t *testing.T) {
	p := &Placement{Partitions: 2, Rooms: &roomList{}}
	ctx := context.Background()
	first, _ := p.Reserve(ctx)
	second, _ := p.Reserve(ctx)
	p.Release(first)
	if again, err := p.Reserve(ctx); err != nil || again != first {
		t.Fatalf("after releasing partition %d (the other, %d, holds a room) the next room went to %d (%v)", first, second, again, err)
	}
}
