// Package inthttp carries the pushserver's api.ReplayAPI (the replay of
// OutputNotificationData) over internal HTTP for the polylith deployment; it has no logic
// (see internal/inthttp).
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/pushserver/api"
)

// Component is the pushserver's name in internal API paths.
const Component = "pushserver"

// Register serves every method of a on router.
func Register(router *mux.Router, a api.ReplayAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.QueryOutputRecords)
	return s
}

// Client calls the pushserver at one base URL. It implements api.ReplayAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.ReplayAPI = (*Client)(nil)

// NewClient calls the pushserver at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// QueryOutputRecords implements api.ReplayAPI.
func (c *Client) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	return ihttp.Call[api.QueryOutputRecordsResponse](ctx, c.c, req)
}
