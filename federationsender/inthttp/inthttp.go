// Package inthttp carries the federationsender's api.SenderAPI over internal HTTP for the
// polylith deployment; it has no logic (see internal/inthttp).
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	"github.com/matrix-org/dendrite/federationsender/api"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
)

// Component is the federationsender's name in internal API paths.
const Component = "federationsender"

// Register serves every method of a on router.
func Register(router *mux.Router, a api.SenderAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.PerformServerAlive)
	return s
}

// Client calls the federationsender at one base URL. It implements api.SenderAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.SenderAPI = (*Client)(nil)

// NewClient calls the federationsender at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// PerformServerAlive implements api.SenderAPI.
func (c *Client) PerformServerAlive(ctx context.Context, req *api.PerformServerAliveRequest) (*api.PerformServerAliveResponse, error) {
	return ihttp.Call[api.PerformServerAliveResponse](ctx, c.c, req)
}
