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
//   - QueryRoomsForUser, which no room scopes, asks every shard and merges the answers;
//   - an alias is stored and looked up on shard PartitionFor(alias, P) mod N; a room's
//     aliases and the published rooms come from every shard, merged; a room's visibility
//     and directory summary from the room's shard;
//   - QueryRoomEvents goes to the room's shard, and QueryRooms asks every shard and merges
//     their pages.
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

// QueryEventsByID implements api.QueryAPI on the room's shard; without a room (federation's
// /event names none) it asks every shard, as shards may keep separate databases.
func (s *ShardedClient) QueryEventsByID(ctx context.Context, req *api.QueryEventsByIDRequest) (*api.QueryEventsByIDResponse, error) {
	if req.RoomID != "" || len(s.shards) == 1 {
		return s.room(req.RoomID).QueryEventsByID(ctx, req)
	}
	answers, err := eachShard(ctx, s, nil, func(ctx context.Context, _ int, c *Client) (*api.QueryEventsByIDResponse, error) {
		return c.QueryEventsByID(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	out := &api.QueryEventsByIDResponse{Events: []api.Event{}}
	seen := map[string]bool{}
	for _, res := range answers {
		outliers := map[string]bool{}
		for _, id := range res.OutlierIDs {
			outliers[id] = true
		}
		for _, e := range res.Events {
			if seen[e.EventID()] {
				continue
			}
			seen[e.EventID()] = true
			out.Events = append(out.Events, e)
			if outliers[e.EventID()] {
				out.OutlierIDs = append(out.OutlierIDs, e.EventID())
			}
		}
	}
	return out, nil
}

// QueryServerAllowed implements api.QueryAPI on the room's shard.
func (s *ShardedClient) QueryServerAllowed(ctx context.Context, req *api.QueryServerAllowedRequest) (*api.QueryServerAllowedResponse, error) {
	return s.room(req.RoomID).QueryServerAllowed(ctx, req)
}

// QueryUserAllowed implements api.VisibilityAPI on the room's shard.
func (s *ShardedClient) QueryUserAllowed(ctx context.Context, req *api.QueryUserAllowedRequest) (*api.QueryUserAllowedResponse, error) {
	return s.room(req.RoomID).QueryUserAllowed(ctx, req)
}

// QueryStateAtEvent implements api.QueryAPI on the room's shard.
func (s *ShardedClient) QueryStateAtEvent(ctx context.Context, req *api.QueryStateAtEventRequest) (*api.QueryStateAtEventResponse, error) {
	return s.room(req.RoomID).QueryStateAtEvent(ctx, req)
}

// QueryOutputRecords implements api.ReplayAPI on the shard writing the partition (the one
// consuming the input partition of the same number).
func (s *ShardedClient) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	if req.Partition < 0 {
		return nil, fmt.Errorf("roomserver client: negative partition %d", req.Partition)
	}
	return s.shards[s.ShardForPartition(req.Partition)].QueryOutputRecords(ctx, req)
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
	ids, err := s.union(ctx, func(ctx context.Context, c *Client) ([]string, error) {
		res, err := c.QueryRoomsForUser(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.RoomIDs, nil
	})
	if err != nil {
		return nil, err
	}
	return &api.QueryRoomsForUserResponse{RoomIDs: ids}, nil
}

// union asks every shard in parallel and answers the sorted union of their lists (shards
// sharing one database give the same rows). It fails if any shard fails.
func (s *ShardedClient) union(ctx context.Context, ask func(ctx context.Context, c *Client) ([]string, error)) ([]string, error) {
	if len(s.shards) == 1 {
		return ask(ctx, s.shards[0])
	}
	answers, err := eachShard(ctx, s, nil, func(ctx context.Context, _ int, c *Client) ([]string, error) { return ask(ctx, c) })
	if err != nil {
		return nil, err
	}
	ids := []string{}
	for _, a := range answers {
		ids = append(ids, a...)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// alias is the shard that stores an alias: chosen by the alias as a room by its ID, so
// creating, resolving and deleting an alias meet on one shard (and its database).
func (s *ShardedClient) alias(alias string) *Client {
	return s.shards[s.ShardForPartition(eventlog.PartitionFor([]byte(alias), s.partitions))]
}

// QueryRoomAlias implements api.DirectoryAPI on the alias's shard.
func (s *ShardedClient) QueryRoomAlias(ctx context.Context, req *api.QueryRoomAliasRequest) (*api.QueryRoomAliasResponse, error) {
	return s.alias(req.Alias).QueryRoomAlias(ctx, req)
}

// PerformSetRoomAlias implements api.DirectoryAPI on the alias's shard.
func (s *ShardedClient) PerformSetRoomAlias(ctx context.Context, req *api.PerformSetRoomAliasRequest) (*api.PerformSetRoomAliasResponse, error) {
	return s.alias(req.Alias).PerformSetRoomAlias(ctx, req)
}

// PerformRemoveRoomAlias implements api.DirectoryAPI on the alias's shard.
func (s *ShardedClient) PerformRemoveRoomAlias(ctx context.Context, req *api.PerformRemoveRoomAliasRequest) (*api.PerformRemoveRoomAliasResponse, error) {
	return s.alias(req.Alias).PerformRemoveRoomAlias(ctx, req)
}

// QueryAliasesForRoom implements api.DirectoryAPI: a room's aliases live on their own
// shards, so every shard is asked.
func (s *ShardedClient) QueryAliasesForRoom(ctx context.Context, req *api.QueryAliasesForRoomRequest) (*api.QueryAliasesForRoomResponse, error) {
	aliases, err := s.union(ctx, func(ctx context.Context, c *Client) ([]string, error) {
		res, err := c.QueryAliasesForRoom(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.Aliases, nil
	})
	if err != nil {
		return nil, err
	}
	return &api.QueryAliasesForRoomResponse{Aliases: aliases}, nil
}

// QueryRoomVisibility implements api.DirectoryAPI on the room's shard.
func (s *ShardedClient) QueryRoomVisibility(ctx context.Context, req *api.QueryRoomVisibilityRequest) (*api.QueryRoomVisibilityResponse, error) {
	return s.room(req.RoomID).QueryRoomVisibility(ctx, req)
}

// PerformSetRoomVisibility implements api.DirectoryAPI on the room's shard.
func (s *ShardedClient) PerformSetRoomVisibility(ctx context.Context, req *api.PerformSetRoomVisibilityRequest) (*api.PerformSetRoomVisibilityResponse, error) {
	return s.room(req.RoomID).PerformSetRoomVisibility(ctx, req)
}

// QueryPublishedRooms implements api.DirectoryAPI: the union of every shard's.
func (s *ShardedClient) QueryPublishedRooms(ctx context.Context, req *api.QueryPublishedRoomsRequest) (*api.QueryPublishedRoomsResponse, error) {
	ids, err := s.union(ctx, func(ctx context.Context, c *Client) ([]string, error) {
		res, err := c.QueryPublishedRooms(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.RoomIDs, nil
	})
	if err != nil {
		return nil, err
	}
	return &api.QueryPublishedRoomsResponse{RoomIDs: ids}, nil
}

// QueryRoomSummaries implements api.DirectoryAPI: each room is summarised by its own shard
// (whose cache holds its current state), the shards in parallel; the answer keeps the
// request's order.
func (s *ShardedClient) QueryRoomSummaries(ctx context.Context, req *api.QueryRoomSummariesRequest) (*api.QueryRoomSummariesResponse, error) {
	if len(s.shards) == 1 {
		return s.shards[0].QueryRoomSummaries(ctx, req)
	}
	perShard := make([][]string, len(s.shards))
	for _, id := range req.RoomIDs {
		i := s.ShardForRoom(id)
		perShard[i] = append(perShard[i], id)
	}
	found, err := eachShard(ctx, s, func(i int) bool { return len(perShard[i]) > 0 }, func(ctx context.Context, i int, c *Client) (*api.QueryRoomSummariesResponse, error) {
		return c.QueryRoomSummaries(ctx, &api.QueryRoomSummariesRequest{RoomIDs: perShard[i]})
	})
	if err != nil {
		return nil, err
	}
	byID := map[string]api.RoomSummary{}
	for _, res := range found {
		if res == nil {
			continue
		}
		for _, r := range res.Rooms {
			byID[r.RoomID] = r
		}
	}
	res := &api.QueryRoomSummariesResponse{Rooms: []api.RoomSummary{}}
	for _, id := range req.RoomIDs {
		if r, ok := byID[id]; ok {
			res.Rooms = append(res.Rooms, r)
		}
	}
	return res, nil
}

// QueryRoomEvents implements api.TimelineAPI on the room's shard.
func (s *ShardedClient) QueryRoomEvents(ctx context.Context, req *api.QueryRoomEventsRequest) (*api.QueryRoomEventsResponse, error) {
	return s.room(req.RoomID).QueryRoomEvents(ctx, req)
}

// QueryRooms implements api.TimelineAPI: every shard's first page after the cursor, merged
// and cut to the page size. Each shard answers its smallest IDs after the cursor, so the
// cut is the smallest of the union: paging through it neither skips nor repeats a room.
func (s *ShardedClient) QueryRooms(ctx context.Context, req *api.QueryRoomsRequest) (*api.QueryRoomsResponse, error) {
	ids, err := s.union(ctx, func(ctx context.Context, c *Client) ([]string, error) {
		res, err := c.QueryRooms(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.RoomIDs, nil
	})
	if err != nil {
		return nil, err
	}
	// Every shard answered at most a page: cut the union to one. A shard answers less than
	// a page only when it has no more, so a short page still ends the walk.
	if page := api.TimelinePage(req.Limit); len(ids) > page {
		ids = ids[:page]
	}
	return &api.QueryRoomsResponse{RoomIDs: ids}, nil
}

// eachShard asks the shards (those only accepts, or all when only is nil) in parallel and
// returns their answers by shard index (the zero value for a shard not asked). It fails if
// any shard fails.
func eachShard[T any](ctx context.Context, s *ShardedClient, only func(i int) bool, ask func(ctx context.Context, i int, c *Client) (T, error)) ([]T, error) {
	answers := make([]T, len(s.shards))
	g, gctx := errgroup.WithContext(ctx)
	for i, c := range s.shards {
		if only != nil && !only(i) {
			continue
		}
		g.Go(func() error {
			res, err := ask(gctx, i, c)
			if err != nil {
				return fmt.Errorf("shard %d: %w", i, err)
			}
			answers[i] = res
			return nil
		})
	}
	return answers, g.Wait()
}
