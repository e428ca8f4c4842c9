// Package inthttp carries the eduserver's api.ServerAPI over internal HTTP for the
// polylith deployment; it has no logic (see internal/inthttp).
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	"github.com/matrix-org/dendrite/eduserver/api"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
)

// Component is the eduserver's name in internal API paths.
const Component = "eduserver"

// Register serves every method of a on router.
func Register(router *mux.Router, a api.ServerAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.QueryOutputRecords)
	ihttp.Serve(s, a.QueryToDeviceTaken)
	return s
}

// Client calls the eduserver at one base URL. It implements api.ServerAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.ServerAPI = (*Client)(nil)

// NewClient calls the eduserver at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// QueryOutputRecords implements api.ReplayAPI.
func (c *Client) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	return ihttp.Call[api.QueryOutputRecordsResponse](ctx, c.c, req)
}

// QueryToDeviceTaken implements api.WaitAPI.
func (c *Client) QueryToDeviceTaken(ctx context.Context, req *api.QueryToDeviceTakenRequest) (*api.QueryToDeviceTakenResponse, error) {
	return ihttp.Call[api.QueryToDeviceTakenResponse](ctx, c.c, req)
}
