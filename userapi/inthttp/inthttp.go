// Package inthttp carries the userapi's api.ClientUserAPI (accounts, devices, tokens,
// profiles, account data, filters) over internal HTTP for the polylith deployment. It has no
// logic: each method is one line on the generic layer in internal/inthttp, which derives the
// route (/_internal/userapi/<Method>) from the method name.
package inthttp

import (
	"context"

	"github.com/gorilla/mux"

	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/userapi/api"
)

// Component is the userapi's name in internal API paths.
const Component = "userapi"

// Register serves every method of a on router. The returned server lists what it serves, for
// the test that no method of api.ClientUserAPI is left out.
func Register(router *mux.Router, a api.ClientUserAPI, opts ihttp.ServerOptions) *ihttp.Server {
	s := ihttp.NewServer(router, Component, opts)
	ihttp.Serve(s, a.QueryAccessToken)
	ihttp.Serve(s, a.PerformAccountCreation)
	ihttp.Serve(s, a.QueryLocalpartAvailable)
	ihttp.Serve(s, a.PerformGuestUpgrade)
	ihttp.Serve(s, a.QueryAccount)
	ihttp.Serve(s, a.PerformAccountDeactivation)
	ihttp.Serve(s, a.QueryAccountByPassword)
	ihttp.Serve(s, a.PerformPasswordUpdate)
	ihttp.Serve(s, a.PerformDeviceCreation)
	ihttp.Serve(s, a.PerformDeviceDeletion)
	ihttp.Serve(s, a.QueryDevices)
	ihttp.Serve(s, a.PerformDeviceUpdate)
	ihttp.Serve(s, a.QueryProfile)
	ihttp.Serve(s, a.PerformSetDisplayName)
	ihttp.Serve(s, a.PerformSetAvatarURL)
	ihttp.Serve(s, a.PerformAccountData)
	ihttp.Serve(s, a.QueryAccountData)
	ihttp.Serve(s, a.PerformPutFilter)
	ihttp.Serve(s, a.QueryFilter)
	return s
}

// Client calls the userapi at one base URL. It implements api.ClientUserAPI.
type Client struct {
	c *ihttp.Client
}

var _ api.ClientUserAPI = (*Client)(nil)

// NewClient calls the userapi at baseURL.
func NewClient(baseURL string, opts ihttp.ClientOptions) *Client {
	return &Client{c: ihttp.NewClient(baseURL, Component, opts)}
}

// QueryAccessToken implements api.ClientUserAPI.
func (c *Client) QueryAccessToken(ctx context.Context, req *api.QueryAccessTokenRequest) (*api.QueryAccessTokenResponse, error) {
	return ihttp.Call[api.QueryAccessTokenResponse](ctx, c.c, req)
}

// PerformAccountCreation implements api.ClientUserAPI.
func (c *Client) PerformAccountCreation(ctx context.Context, req *api.PerformAccountCreationRequest) (*api.PerformAccountCreationResponse, error) {
	return ihttp.Call[api.PerformAccountCreationResponse](ctx, c.c, req)
}

// QueryLocalpartAvailable implements api.ClientUserAPI.
func (c *Client) QueryLocalpartAvailable(ctx context.Context, req *api.QueryLocalpartAvailableRequest) (*api.QueryLocalpartAvailableResponse, error) {
	return ihttp.Call[api.QueryLocalpartAvailableResponse](ctx, c.c, req)
}

// QueryAccountByPassword implements api.ClientUserAPI.
func (c *Client) QueryAccountByPassword(ctx context.Context, req *api.QueryAccountByPasswordRequest) (*api.QueryAccountByPasswordResponse, error) {
	return ihttp.Call[api.QueryAccountByPasswordResponse](ctx, c.c, req)
}

// PerformPasswordUpdate implements api.ClientUserAPI.
func (c *Client) PerformPasswordUpdate(ctx context.Context, req *api.PerformPasswordUpdateRequest) (*api.PerformPasswordUpdateResponse, error) {
	return ihttp.Call[api.PerformPasswordUpdateResponse](ctx, c.c, req)
}

// PerformDeviceCreation implements api.ClientUserAPI.
func (c *Client) PerformDeviceCreation(ctx context.Context, req *api.PerformDeviceCreationRequest) (*api.PerformDeviceCreationResponse, error) {
	return ihttp.Call[api.PerformDeviceCreationResponse](ctx, c.c, req)
}

// PerformDeviceDeletion implements api.ClientUserAPI.
func (c *Client) PerformDeviceDeletion(ctx context.Context, req *api.PerformDeviceDeletionRequest) (*api.PerformDeviceDeletionResponse, error) {
	return ihttp.Call[api.PerformDeviceDeletionResponse](ctx, c.c, req)
}

// QueryDevices implements api.ClientUserAPI.
func (c *Client) QueryDevices(ctx context.Context, req *api.QueryDevicesRequest) (*api.QueryDevicesResponse, error) {
	return ihttp.Call[api.QueryDevicesResponse](ctx, c.c, req)
}

// PerformDeviceUpdate implements api.ClientUserAPI.
func (c *Client) PerformDeviceUpdate(ctx context.Context, req *api.PerformDeviceUpdateRequest) (*api.PerformDeviceUpdateResponse, error) {
	return ihttp.Call[api.PerformDeviceUpdateResponse](ctx, c.c, req)
}

// QueryProfile implements api.ClientUserAPI.
func (c *Client) QueryProfile(ctx context.Context, req *api.QueryProfileRequest) (*api.QueryProfileResponse, error) {
	return ihttp.Call[api.QueryProfileResponse](ctx, c.c, req)
}

// PerformSetDisplayName implements api.ClientUserAPI.
func (c *Client) PerformSetDisplayName(ctx context.Context, req *api.PerformSetDisplayNameRequest) (*api.PerformSetDisplayNameResponse, error) {
	return ihttp.Call[api.PerformSetDisplayNameResponse](ctx, c.c, req)
}

// PerformSetAvatarURL implements api.ClientUserAPI.
func (c *Client) PerformSetAvatarURL(ctx context.Context, req *api.PerformSetAvatarURLRequest) (*api.PerformSetAvatarURLResponse, error) {
	return ihttp.Call[api.PerformSetAvatarURLResponse](ctx, c.c, req)
}

// PerformAccountData implements api.ClientUserAPI.
func (c *Client) PerformAccountData(ctx context.Context, req *api.PerformAccountDataRequest) (*api.PerformAccountDataResponse, error) {
	return ihttp.Call[api.PerformAccountDataResponse](ctx, c.c, req)
}

// QueryAccountData implements api.ClientUserAPI.
func (c *Client) QueryAccountData(ctx context.Context, req *api.QueryAccountDataRequest) (*api.QueryAccountDataResponse, error) {
	return ihttp.Call[api.QueryAccountDataResponse](ctx, c.c, req)
}

// PerformPutFilter implements api.ClientUserAPI.
func (c *Client) PerformPutFilter(ctx context.Context, req *api.PerformPutFilterRequest) (*api.PerformPutFilterResponse, error) {
	return ihttp.Call[api.PerformPutFilterResponse](ctx, c.c, req)
}

// QueryFilter implements api.ClientUserAPI.
func (c *Client) QueryFilter(ctx context.Context, req *api.QueryFilterRequest) (*api.QueryFilterResponse, error) {
	return ihttp.Call[api.QueryFilterResponse](ctx, c.c, req)
}

// PerformGuestUpgrade implements api.ClientUserAPI.
func (c *Client) PerformGuestUpgrade(ctx context.Context, req *api.PerformGuestUpgradeRequest) (*api.PerformGuestUpgradeResponse, error) {
	return ihttp.Call[api.PerformGuestUpgradeResponse](ctx, c.c, req)
}

// QueryAccount implements api.ClientUserAPI.
func (c *Client) QueryAccount(ctx context.Context, req *api.QueryAccountRequest) (*api.QueryAccountResponse, error) {
	return ihttp.Call[api.QueryAccountResponse](ctx, c.c, req)
}

// PerformAccountDeactivation implements api.ClientUserAPI.
func (c *Client) PerformAccountDeactivation(ctx context.Context, req *api.PerformAccountDeactivationRequest) (*api.PerformAccountDeactivationResponse, error) {
	return ihttp.Call[api.PerformAccountDeactivationResponse](ctx, c.c, req)
}
