package api

import (
	"context"
	"fmt"
	"sync"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// RoomLister lists the rooms the roomserver stores (every shard's: see TimelineAPI).
type RoomLister interface {
	QueryRooms(ctx context.Context, req *QueryRoomsRequest) (*QueryRoomsResponse, error)
}

// Placement spreads the rooms this server creates evenly over TopicInputRoomEvent's
// partitions, and so over the roomserver's shards. A room's partition stays
// eventlog.PartitionFor(room ID, P), the one function every process routes by (DESIGN.md
// 5): the creator does not record its choice anywhere, it picks the room ID (a random one
// whose hash lands on the chosen partition; in v12 rooms the create event whose hash is the
// ID) so that the hash gives the partition with the fewest rooms. Rooms created before keep
// the partition their ID hashes to, and nothing else needs to know about placement.
//
// Random IDs alone put 40 rooms on 4 shards as, typically, 13 + 11 + 8 + 8: the busiest
// shard then bounds the whole server. Here N rooms created on P partitions land within one
// of N/P on each, and, since the least-loaded partitions are taken in turn (round robin among
// ties), within one of N/S on each of S shards when S divides P (shard i owns the
// partitions p with p mod S = i).
//
// The counts start from the rooms the roomserver stores, listed once at the first room
// created (every room, joined remote ones too: each costs its shard alike), then follow
// this process's own placements. Rooms another process creates (a second clientapi) or
// joins over federation meanwhile are counted at the next start.
type Placement struct {
	// Partitions is TopicInputRoomEvent's partition count.
	Partitions int32
	// Rooms lists the stored rooms.
	Rooms RoomLister

	mu     sync.Mutex
	counts []int64 // rooms per partition; nil until listed
	next   int32   // the partition the search for the least-loaded one starts at
}

// Reserve counts one more room on the partition with the fewest rooms and returns that
// partition; -1 on a nil Placement (rooms then go where their random IDs hash).
func (p *Placement) Reserve(ctx context.Context) (int32, error) {
	if p == nil || p.Partitions <= 0 {
		return -1, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts == nil {
		counts, err := p.list(ctx)
		if err != nil {
			return -1, err
		}
		p.counts = counts
	}
	best := p.next
	for i := range p.Partitions {
		q := (p.next + i) % p.Partitions
		if p.counts[q] < p.counts[best] {
			best = q
		}
	}
	p.counts[best]++
	p.next = (best + 1) % p.Partitions
	return best, nil
}

// Release takes back a reservation whose room was never created.
func (p *Placement) Release(partition int32) {
	if p == nil || partition < 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts != nil && p.counts[partition] > 0 {
		p.counts[partition]--
	}
}

// Holds reports whether roomID is routed to partition; any room ID holds partition -1.
func (p *Placement) Holds(roomID string, partition int32) bool {
	return p == nil || partition < 0 || eventlog.PartitionFor([]byte(roomID), p.Partitions) == partition
}

// list counts the stored rooms per partition, a page at a time.
func (p *Placement) list(ctx context.Context) ([]int64, error) {
	counts := make([]int64, p.Partitions)
	after := ""
	for {
		res, err := p.Rooms.QueryRooms(ctx, &QueryRoomsRequest{AfterRoomID: after, Limit: maxTimelinePage})
		if err != nil {
			return nil, fmt.Errorf("list rooms to place new ones: %w", err)
		}
		for _, id := range res.RoomIDs {
			counts[eventlog.PartitionFor([]byte(id), p.Partitions)]++
		}
		if len(res.RoomIDs) < maxTimelinePage {
			return counts, nil
		}
		after = res.RoomIDs[len(res.RoomIDs)-1]
	}
}
