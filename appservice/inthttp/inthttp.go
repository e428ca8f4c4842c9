// Package inthttp carries the appservice component's api.QueryAPI over internal HTTP for
// the polylith deployment; it has no logic (see internal/inthttp).
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	"github.com/matrix-org/dendrite/appservice/api"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
)

// Component is the appservice component's name in internal API paths.
const Component = "appservice"

// Register serves every method of a on router.
func Register(router *mux.Router, a api.QueryAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.QueryUserIDExists)
	ihttp.Serve(s, a.QueryRoomAliasExists)
	ihttp.Serve(s, a.QueryThirdParty)
	ihttp.Serve(s, a.QueryProtocols)
	ihttp.Serve(s, a.PerformPing)
	return s
}

// Client calls the appservice component at one base URL. It implements api.QueryAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.QueryAPI = (*Client)(nil)

// NewClient calls the appservice component at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// QueryUserIDExists implements api.QueryAPI.
func (c *Client) QueryUserIDExists(ctx context.Context, req *api.QueryUserIDExistsRequest) (*api.QueryUserIDExistsResponse, error) {
	return ihttp.Call[api.QueryUserIDExistsResponse](ctx, c.c, req)
}

// QueryRoomAliasExists implements api.QueryAPI.
func (c *Client) QueryRoomAliasExists(ctx context.Context, req *api.QueryRoomAliasExistsRequest) (*api.QueryRoomAliasExistsResponse, error) {
	return ihttp.Call[api.QueryRoomAliasExistsResponse](ctx, c.c, req)
}

// QueryThirdParty implements api.QueryAPI.
func (c *Client) QueryThirdParty(ctx context.Context, req *api.QueryThirdPartyRequest) (*api.QueryThirdPartyResponse, error) {
	return ihttp.Call[api.QueryThirdPartyResponse](ctx, c.c, req)
}

// QueryProtocols implements api.QueryAPI.
func (c *Client) QueryProtocols(ctx context.Context, req *api.QueryProtocolsRequest) (*api.QueryProtocolsResponse, error) {
	return ihttp.Call[api.QueryProtocolsResponse](ctx, c.c, req)
}

// PerformPing implements api.QueryAPI.
func (c *Client) PerformPing(ctx context.Context, req *api.PerformPingRequest) (*api.PerformPingResponse, error) {
	return ihttp.Call[api.PerformPingResponse](ctx, c.c, req)
}
