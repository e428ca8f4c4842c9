// Package inthttp carries the roomserver's api.ServerAPI (queries and the read-your-writes
// wait) over internal HTTP for the polylith deployment. It has no logic: each method is one
// line on the generic layer in internal/inthttp, which derives the route
// (/_internal/roomserver/<Method>) from the method name.
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// Component is the roomserver's name in internal API paths.
const Component = "roomserver"

// Register serves every method of a on router. The returned server lists what it serves, for
// the test that no method of api.ServerAPI is left out.
func Register(router *mux.Router, a api.ServerAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.QueryRoomInfo)
	ihttp.Serve(s, a.QueryCurrentState)
	ihttp.Serve(s, a.QueryMembershipForUser)
	ihttp.Serve(s, a.QueryRoomsForUser)
	ihttp.Serve(s, a.QueryEventsByID)
	ihttp.Serve(s, a.QueryStateAtEvent)
	ihttp.Serve(s, a.QueryServerAllowed)
	ihttp.Serve(s, a.QueryUserAllowed)
	ihttp.Serve(s, a.QueryInputResult)
	ihttp.Serve(s, a.QueryOutputRecords)
	ihttp.Serve(s, a.QueryRoomAlias)
	ihttp.Serve(s, a.QueryAliasesForRoom)
	ihttp.Serve(s, a.PerformSetRoomAlias)
	ihttp.Serve(s, a.PerformRemoveRoomAlias)
	ihttp.Serve(s, a.QueryRoomVisibility)
	ihttp.Serve(s, a.PerformSetRoomVisibility)
	ihttp.Serve(s, a.QueryPublishedRooms)
	ihttp.Serve(s, a.QueryRoomSummaries)
	ihttp.Serve(s, a.QueryRooms)
	ihttp.Serve(s, a.QueryRoomEvents)
	return s
}

// Client calls one roomserver shard. It implements api.ServerAPI, so it serves both as a
// reader's api.QueryAPI and as the Wait of a writer's api.Input. With several shards, the
// caller routes each room (and each input partition) to the shard that owns it (DESIGN.md 5).
type Client struct {
	c *ihttp.Client
}

var _ api.ServerAPI = (*Client)(nil)

// NewClient calls the roomserver shard at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// QueryRoomInfo implements api.QueryAPI.
func (c *Client) QueryRoomInfo(ctx context.Context, req *api.QueryRoomInfoRequest) (*api.QueryRoomInfoResponse, error) {
	return ihttp.Call[api.QueryRoomInfoResponse](ctx, c.c, req)
}

// QueryCurrentState implements api.QueryAPI.
func (c *Client) QueryCurrentState(ctx context.Context, req *api.QueryCurrentStateRequest) (*api.QueryCurrentStateResponse, error) {
	return ihttp.Call[api.QueryCurrentStateResponse](ctx, c.c, req)
}

// QueryMembershipForUser implements api.QueryAPI.
func (c *Client) QueryMembershipForUser(ctx context.Context, req *api.QueryMembershipForUserRequest) (*api.QueryMembershipForUserResponse, error) {
	return ihttp.Call[api.QueryMembershipForUserResponse](ctx, c.c, req)
}

// QueryRoomsForUser implements api.QueryAPI.
func (c *Client) QueryRoomsForUser(ctx context.Context, req *api.QueryRoomsForUserRequest) (*api.QueryRoomsForUserResponse, error) {
	return ihttp.Call[api.QueryRoomsForUserResponse](ctx, c.c, req)
}

// QueryEventsByID implements api.QueryAPI.
func (c *Client) QueryEventsByID(ctx context.Context, req *api.QueryEventsByIDRequest) (*api.QueryEventsByIDResponse, error) {
	return ihttp.Call[api.QueryEventsByIDResponse](ctx, c.c, req)
}

// QueryServerAllowed implements api.QueryAPI.
func (c *Client) QueryServerAllowed(ctx context.Context, req *api.QueryServerAllowedRequest) (*api.QueryServerAllowedResponse, error) {
	return ihttp.Call[api.QueryServerAllowedResponse](ctx, c.c, req)
}

// QueryUserAllowed implements api.VisibilityAPI.
func (c *Client) QueryUserAllowed(ctx context.Context, req *api.QueryUserAllowedRequest) (*api.QueryUserAllowedResponse, error) {
	return ihttp.Call[api.QueryUserAllowedResponse](ctx, c.c, req)
}

// QueryStateAtEvent implements api.QueryAPI.
func (c *Client) QueryStateAtEvent(ctx context.Context, req *api.QueryStateAtEventRequest) (*api.QueryStateAtEventResponse, error) {
	return ihttp.Call[api.QueryStateAtEventResponse](ctx, c.c, req)
}

// QueryInputResult implements api.WaitAPI.
func (c *Client) QueryInputResult(ctx context.Context, req *api.QueryInputResultRequest) (*api.QueryInputResultResponse, error) {
	return ihttp.Call[api.QueryInputResultResponse](ctx, c.c, req)
}

// QueryOutputRecords implements api.ReplayAPI.
func (c *Client) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	return ihttp.Call[api.QueryOutputRecordsResponse](ctx, c.c, req)
}

// QueryRoomAlias implements api.DirectoryAPI.
func (c *Client) QueryRoomAlias(ctx context.Context, req *api.QueryRoomAliasRequest) (*api.QueryRoomAliasResponse, error) {
	return ihttp.Call[api.QueryRoomAliasResponse](ctx, c.c, req)
}

// QueryAliasesForRoom implements api.DirectoryAPI.
func (c *Client) QueryAliasesForRoom(ctx context.Context, req *api.QueryAliasesForRoomRequest) (*api.QueryAliasesForRoomResponse, error) {
	return ihttp.Call[api.QueryAliasesForRoomResponse](ctx, c.c, req)
}

// PerformSetRoomAlias implements api.DirectoryAPI.
func (c *Client) PerformSetRoomAlias(ctx context.Context, req *api.PerformSetRoomAliasRequest) (*api.PerformSetRoomAliasResponse, error) {
	return ihttp.Call[api.PerformSetRoomAliasResponse](ctx, c.c, req)
}

// PerformRemoveRoomAlias implements api.DirectoryAPI.
func (c *Client) PerformRemoveRoomAlias(ctx context.Context, req *api.PerformRemoveRoomAliasRequest) (*api.PerformRemoveRoomAliasResponse, error) {
	return ihttp.Call[api.PerformRemoveRoomAliasResponse](ctx, c.c, req)
}

// QueryRoomVisibility implements api.DirectoryAPI.
func (c *Client) QueryRoomVisibility(ctx context.Context, req *api.QueryRoomVisibilityRequest) (*api.QueryRoomVisibilityResponse, error) {
	return ihttp.Call[api.QueryRoomVisibilityResponse](ctx, c.c, req)
}

// PerformSetRoomVisibility implements api.DirectoryAPI.
func (c *Client) PerformSetRoomVisibility(ctx context.Context, req *api.PerformSetRoomVisibilityRequest) (*api.PerformSetRoomVisibilityResponse, error) {
	return ihttp.Call[api.PerformSetRoomVisibilityResponse](ctx, c.c, req)
}

// QueryPublishedRooms implements api.DirectoryAPI.
func (c *Client) QueryPublishedRooms(ctx context.Context, req *api.QueryPublishedRoomsRequest) (*api.QueryPublishedRoomsResponse, error) {
	return ihttp.Call[api.QueryPublishedRoomsResponse](ctx, c.c, req)
}

// QueryRoomSummaries implements api.DirectoryAPI.
func (c *Client) QueryRoomSummaries(ctx context.Context, req *api.QueryRoomSummariesRequest) (*api.QueryRoomSummariesResponse, error) {
	return ihttp.Call[api.QueryRoomSummariesResponse](ctx, c.c, req)
}

// QueryRooms implements api.TimelineAPI.
func (c *Client) QueryRooms(ctx context.Context, req *api.QueryRoomsRequest) (*api.QueryRoomsResponse, error) {
	return ihttp.Call[api.QueryRoomsResponse](ctx, c.c, req)
}

// QueryRoomEvents implements api.TimelineAPI.
func (c *Client) QueryRoomEvents(ctx context.Context, req *api.QueryRoomEventsRequest) (*api.QueryRoomEventsResponse, error) {
	return ihttp.Call[api.QueryRoomEventsResponse](ctx, c.c, req)
}
