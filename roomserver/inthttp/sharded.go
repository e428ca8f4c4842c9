package inthttp

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/eventlog"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// ShardedClient is the roomserver as its callers see it when it runs as N shards
// (DESIGN.md 5). Shard i owns the InputRoomEvent partitions p with p mod N == i, so:
//   - a room's queries go to shard PartitionFor(room ID, P) mod N, the shard that writes the
//     room and whose caches hold its current state;
//   - QueryInputResult goes to shard Partition mod N, the one consuming that partition;
//   - QueryRoomsForUser, which no room scopes, asks every shard and merges the answers.
//
// Writers and readers route with this one function, so they always agree with the shards'
// own assignment (roomserver.Deps.Shard). It implements api.ServerAPI and is safe for
// concurrent use.
type ShardedClient struct {
	shards     []*Client
	partitions int32
}

var _ api.ServerAPI = (*ShardedClient)(nil)

// NewShardedClient calls the shards at urls (index i is shard i) of a roomserver whose input
// topic has partitions partitions.
func NewShardedClient(urls []string, partitions int32, opts ihttp.ClientOptions) (*ShardedClient, error) {
	if len(urls) == 0 {
		return nil, errors.New("roomserver client: no shard URLs")
	}
	if partitions < int32(len(urls)) {
		return nil, fmt.Errorf("roomserver client: %d shards for %d partitions", len(urls), partitions)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = ihttp.NewHTTPClient() // one connection pool for every shard
	}
	s := &ShardedClient{partitions: partitions}
	for _, u := range urls {
		s.shards = append(s.shards, NewClient(u, opts))
	}
	return s, nil
}

// ShardForRoom is the index of the shard that owns roomID.
func (s *ShardedClient) ShardForRoom(roomID string) int {
	return s.ShardForPartition(eventlog.PartitionFor([]byte(roomID), s.partitions))
}

// ShardForPartition is the index of the shard that consumes input partition p.
func (s *ShardedClient) ShardForPartition(p int32) int {
	return int(p) % len(s.shards)
}

func (s *ShardedClient) room(roomID string) *Client {
	return s.shards[s.ShardForRoom(roomID)]
}

// QueryRoomInfo implements api.QueryAPI on the room's shard.
func (s *ShardedClient) QueryRoomInfo(ctx context.Context, req *api.QueryRoomInfoRequest) (*api.QueryRoomInfoResponse, error) {
	return s.room(req.RoomID).QueryRoomInfo(ctx, req)
}

// QueryCurrentState implements api.QueryAPI on the room's shard.
func (s *ShardedClient) QueryCurrentState(ctx context.Context, req *api.QueryCurrentStateRequest) (*api.QueryCurrentStateResponse, error) {
	return s.room(req.RoomID).QueryCurrentState(ctx, req)
}

// QueryMembershipForUser implements api.QueryAPI on the room's shard.
func (s *ShardedClient) QueryMembershipForUser(ctx context.Context, req *api.QueryMembershipForUserRequest) (*api.QueryMembershipForUserResponse, error) {
	return s.room(req.RoomID).QueryMembershipForUser(ctx, req)
}

// QueryEventsByID implements api.QueryAPI on the room's shard.
func (s *ShardedClient) QueryEventsByID(ctx context.Context, req *api.QueryEventsByIDRequest) (*api.QueryEventsByIDResponse, error) {
	return s.room(req.RoomID).QueryEventsByID(ctx, req)
}

// QueryStateAtEvent implements api.QueryAPI on the room's shard.
func (s *ShardedClient) QueryStateAtEvent(ctx context.Context, req *api.QueryStateAtEventRequest) (*api.QueryStateAtEventResponse, error) {
	return s.room(req.RoomID).QueryStateAtEvent(ctx, req)
}

// QueryInputResult implements api.WaitAPI on the shard consuming the partition.
func (s *ShardedClient) QueryInputResult(ctx context.Context, req *api.QueryInputResultRequest) (*api.QueryInputResultResponse, error) {
	if req.Partition < 0 {
		return nil, fmt.Errorf("roomserver client: negative partition %d", req.Partition)
	}
	return s.shards[s.ShardForPartition(req.Partition)].QueryInputResult(ctx, req)
}

// QueryRoomsForUser implements api.QueryAPI: it asks every shard in parallel and answers
// the union, sorted. It fails if any shard fails: a partial list would hide rooms.
func (s *ShardedClient) QueryRoomsForUser(ctx context.Context, req *api.QueryRoomsForUserRequest) (*api.QueryRoomsForUserResponse, error) {
	if len(s.shards) == 1 {
		return s.shards[0].QueryRoomsForUser(ctx, req)
	}
	answers := make([][]string, len(s.shards))
	g, gctx := errgroup.WithContext(ctx)
	for i, c := range s.shards {
		g.Go(func() error {
			res, err := c.QueryRoomsForUser(gctx, req)
			if err != nil {
				return fmt.Errorf("shard %d: %w", i, err)
			}
			answers[i] = res.RoomIDs
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var ids []string
	for _, a := range answers {
		ids = append(ids, a...)
	}
	slices.Sort(ids)
	return &api.QueryRoomsForUserResponse{RoomIDs: slices.Compact(ids)}, nil
}
