// Package inthttp carries the presenceserver's api.ServerAPI over internal HTTP for the
// polylith deployment; it has no logic (see internal/inthttp).
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/presenceserver/api"
)

// Component is the presenceserver's name in internal API paths.
const Component = "presenceserver"

// Register serves every method of a on router.
func Register(router *mux.Router, a api.ServerAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.QueryPresence)
	ihttp.Serve(s, a.QueryOutputRecords)
	ihttp.Serve(s, a.QueryInputTaken)
	return s
}

// Client calls the presenceserver at one base URL. It implements api.ServerAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.ServerAPI = (*Client)(nil)

// NewClient calls the presenceserver at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// QueryPresence implements api.QueryAPI.
func (c *Client) QueryPresence(ctx context.Context, req *api.QueryPresenceRequest) (*api.QueryPresenceResponse, error) {
	return ihttp.Call[api.QueryPresenceResponse](ctx, c.c, req)
}

// QueryOutputRecords implements api.ReplayAPI.
func (c *Client) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	return ihttp.Call[api.QueryOutputRecordsResponse](ctx, c.c, req)
}

// QueryInputTaken implements api.TakenAPI.
func (c *Client) QueryInputTaken(ctx context.Context, req *api.QueryInputTakenRequest) (*api.QueryInputTakenResponse, error) {
	return ihttp.Call[api.QueryInputTakenResponse](ctx, c.c, req)
}
