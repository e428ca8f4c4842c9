// Package inthttp carries the federationapi's api.KeyAPI over internal HTTP for the
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
func Register(router *mux.Router, a api.KeyAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.QueryPublicKeys)
	return s
}

// Client calls the federationapi at one base URL. It implements api.KeyAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.KeyAPI = (*Client)(nil)

// NewClient calls the federationapi at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// QueryPublicKeys implements api.KeyAPI.
func (c *Client) QueryPublicKeys(ctx context.Context, req *api.QueryPublicKeysRequest) (*api.QueryPublicKeysResponse, error) {
	return ihttp.Call[api.QueryPublicKeysResponse](ctx, c.c, req)
}
