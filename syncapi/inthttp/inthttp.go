// Package inthttp carries the sync API's api.PeekAPI over internal HTTP for the polylith
// deployment; it has no logic (see internal/inthttp).
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/syncapi/api"
)

// Component is the sync API's name in internal API paths.
const Component = "syncapi"

// Register serves every method of a on router.
func Register(router *mux.Router, a api.PeekAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.PerformUnpeek)
	return s
}

// Client calls the sync API at one base URL. It implements api.PeekAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.PeekAPI = (*Client)(nil)

// NewClient calls the sync API at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// PerformUnpeek implements api.PeekAPI.
func (c *Client) PerformUnpeek(ctx context.Context, req *api.PerformUnpeekRequest) (*api.PerformUnpeekResponse, error) {
	return ihttp.Call[api.PerformUnpeekResponse](ctx, c.c, req)
}
