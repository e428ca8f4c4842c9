// Package inthttp carries the federationapi's api.ServerAPI over internal HTTP for the
// polylith deployment. It has no logic: each method is one line on the generic layer in
// internal/inthttp, which derives the route (/_internal/federationapi/<Method>) from the
// method name.
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	"github.com/matrix-org/dendrite/federationapi/api"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
)

// Component is the federationapi's name in internal API paths.
const Component = "federationapi"

// Register serves every method of a on router.
func Register(router *mux.Router, a api.ServerAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.QueryPublicKeys)
	ihttp.Serve(s, a.PerformJoin)
	ihttp.Serve(s, a.PerformInvite)
	ihttp.Serve(s, a.PerformLeave)
	ihttp.Serve(s, a.QueryRoomAlias)
	ihttp.Serve(s, a.QueryPublicRooms)
	ihttp.Serve(s, a.PerformBackfill)
	ihttp.Serve(s, a.ClaimRemoteKeys)
	return s
}

// Client calls the federationapi at one base URL. It implements api.ServerAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.ServerAPI = (*Client)(nil)

// NewClient calls the federationapi at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// QueryPublicKeys implements api.KeyAPI.
func (c *Client) QueryPublicKeys(ctx context.Context, req *api.QueryPublicKeysRequest) (*api.QueryPublicKeysResponse, error) {
	return ihttp.Call[api.QueryPublicKeysResponse](ctx, c.c, req)
}

// PerformJoin implements api.ClientFederationAPI.
func (c *Client) PerformJoin(ctx context.Context, req *api.PerformJoinRequest) (*api.PerformJoinResponse, error) {
	return ihttp.Call[api.PerformJoinResponse](ctx, c.c, req)
}

// PerformInvite implements api.ClientFederationAPI.
func (c *Client) PerformInvite(ctx context.Context, req *api.PerformInviteRequest) (*api.PerformInviteResponse, error) {
	return ihttp.Call[api.PerformInviteResponse](ctx, c.c, req)
}

// PerformLeave implements api.ClientFederationAPI.
func (c *Client) PerformLeave(ctx context.Context, req *api.PerformLeaveRequest) (*api.PerformLeaveResponse, error) {
	return ihttp.Call[api.PerformLeaveResponse](ctx, c.c, req)
}

// QueryRoomAlias implements api.ClientFederationAPI.
func (c *Client) QueryRoomAlias(ctx context.Context, req *api.QueryRoomAliasRequest) (*api.QueryRoomAliasResponse, error) {
	return ihttp.Call[api.QueryRoomAliasResponse](ctx, c.c, req)
}

// QueryPublicRooms implements api.ClientFederationAPI.
func (c *Client) QueryPublicRooms(ctx context.Context, req *api.QueryPublicRoomsRequest) (*api.QueryPublicRoomsResponse, error) {
	return ihttp.Call[api.QueryPublicRoomsResponse](ctx, c.c, req)
}

// PerformBackfill implements api.SyncFederationAPI.
func (c *Client) PerformBackfill(ctx context.Context, req *api.PerformBackfillRequest) (*api.PerformBackfillResponse, error) {
	return ihttp.Call[api.PerformBackfillResponse](ctx, c.c, req)
}

// ClaimRemoteKeys implements api.ServerAPI.
func (c *Client) ClaimRemoteKeys(ctx context.Context, req *api.ClaimRemoteKeysRequest) (*api.ClaimRemoteKeysResponse, error) {
	return ihttp.Call[api.ClaimRemoteKeysResponse](ctx, c.c, req)
}
