// Package inthttp carries the userapi's api.ClientUserAPI (accounts, devices, tokens,
// profiles, account data, filters, keys) over internal HTTP for the polylith deployment. It has no
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
	ihttp.Serve(s, a.QueryErasedUsers)
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
	ihttp.Serve(s, a.PerformRoomTag)
	ihttp.Serve(s, a.PerformPutFilter)
	ihttp.Serve(s, a.QueryFilter)
	ihttp.Serve(s, a.PerformUploadKeys)
	ihttp.Serve(s, a.QueryKeys)
	ihttp.Serve(s, a.QueryRemoteKeys)
	ihttp.Serve(s, a.PerformClaimKeys)
	ihttp.Serve(s, a.QueryOneTimeKeyCounts)
	ihttp.Serve(s, a.PerformMarkRemoteDeviceListsStale)
	ihttp.Serve(s, a.PerformUploadDeviceSigningKeys)
	ihttp.Serve(s, a.PerformUploadSignatures)
	ihttp.Serve(s, a.QueryDeviceList)
	ihttp.Serve(s, a.PerformKeyBackupVersion)
	ihttp.Serve(s, a.QueryKeyBackupVersion)
	ihttp.Serve(s, a.PerformRoomKeys)
	ihttp.Serve(s, a.QueryRoomKeys)
	ihttp.Serve(s, a.QueryOutputRecords)
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

// PerformRoomTag implements api.ClientUserAPI.
func (c *Client) PerformRoomTag(ctx context.Context, req *api.PerformRoomTagRequest) (*api.PerformRoomTagResponse, error) {
	return ihttp.Call[api.PerformRoomTagResponse](ctx, c.c, req)
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

// PerformUploadKeys implements api.ClientUserAPI.
func (c *Client) PerformUploadKeys(ctx context.Context, req *api.PerformUploadKeysRequest) (*api.PerformUploadKeysResponse, error) {
	return ihttp.Call[api.PerformUploadKeysResponse](ctx, c.c, req)
}

// QueryKeys implements api.ClientUserAPI.
func (c *Client) QueryKeys(ctx context.Context, req *api.QueryKeysRequest) (*api.QueryKeysResponse, error) {
	return ihttp.Call[api.QueryKeysResponse](ctx, c.c, req)
}

// PerformClaimKeys implements api.ClientUserAPI.
func (c *Client) PerformClaimKeys(ctx context.Context, req *api.PerformClaimKeysRequest) (*api.PerformClaimKeysResponse, error) {
	return ihttp.Call[api.PerformClaimKeysResponse](ctx, c.c, req)
}

// QueryOneTimeKeyCounts implements api.ClientUserAPI.
func (c *Client) QueryOneTimeKeyCounts(ctx context.Context, req *api.QueryOneTimeKeyCountsRequest) (*api.QueryOneTimeKeyCountsResponse, error) {
	return ihttp.Call[api.QueryOneTimeKeyCountsResponse](ctx, c.c, req)
}

// PerformMarkRemoteDeviceListsStale implements api.ClientUserAPI.
func (c *Client) PerformMarkRemoteDeviceListsStale(ctx context.Context, req *api.PerformMarkRemoteDeviceListsStaleRequest) (*api.PerformMarkRemoteDeviceListsStaleResponse, error) {
	return ihttp.Call[api.PerformMarkRemoteDeviceListsStaleResponse](ctx, c.c, req)
}

// PerformUploadDeviceSigningKeys implements api.ClientUserAPI.
func (c *Client) PerformUploadDeviceSigningKeys(ctx context.Context, req *api.PerformUploadDeviceSigningKeysRequest) (*api.PerformUploadDeviceSigningKeysResponse, error) {
	return ihttp.Call[api.PerformUploadDeviceSigningKeysResponse](ctx, c.c, req)
}

// PerformUploadSignatures implements api.ClientUserAPI.
func (c *Client) PerformUploadSignatures(ctx context.Context, req *api.PerformUploadSignaturesRequest) (*api.PerformUploadSignaturesResponse, error) {
	return ihttp.Call[api.PerformUploadSignaturesResponse](ctx, c.c, req)
}

// QueryDeviceList implements api.ClientUserAPI.
func (c *Client) QueryDeviceList(ctx context.Context, req *api.QueryDeviceListRequest) (*api.QueryDeviceListResponse, error) {
	return ihttp.Call[api.QueryDeviceListResponse](ctx, c.c, req)
}

// PerformKeyBackupVersion implements api.ClientUserAPI.
func (c *Client) PerformKeyBackupVersion(ctx context.Context, req *api.PerformKeyBackupVersionRequest) (*api.PerformKeyBackupVersionResponse, error) {
	return ihttp.Call[api.PerformKeyBackupVersionResponse](ctx, c.c, req)
}

// QueryKeyBackupVersion implements api.ClientUserAPI.
func (c *Client) QueryKeyBackupVersion(ctx context.Context, req *api.QueryKeyBackupVersionRequest) (*api.QueryKeyBackupVersionResponse, error) {
	return ihttp.Call[api.QueryKeyBackupVersionResponse](ctx, c.c, req)
}

// PerformRoomKeys implements api.ClientUserAPI.
func (c *Client) PerformRoomKeys(ctx context.Context, req *api.PerformRoomKeysRequest) (*api.PerformRoomKeysResponse, error) {
	return ihttp.Call[api.PerformRoomKeysResponse](ctx, c.c, req)
}

// QueryRoomKeys implements api.ClientUserAPI.
func (c *Client) QueryRoomKeys(ctx context.Context, req *api.QueryRoomKeysRequest) (*api.QueryRoomKeysResponse, error) {
	return ihttp.Call[api.QueryRoomKeysResponse](ctx, c.c, req)
}

// PerformGuestUpgrade implements api.ClientUserAPI.
func (c *Client) PerformGuestUpgrade(ctx context.Context, req *api.PerformGuestUpgradeRequest) (*api.PerformGuestUpgradeResponse, error) {
	return ihttp.Call[api.PerformGuestUpgradeResponse](ctx, c.c, req)
}

// QueryAccount implements api.ClientUserAPI.
func (c *Client) QueryAccount(ctx context.Context, req *api.QueryAccountRequest) (*api.QueryAccountResponse, error) {
	return ihttp.Call[api.QueryAccountResponse](ctx, c.c, req)
}

// QueryErasedUsers implements api.ClientUserAPI.
func (c *Client) QueryErasedUsers(ctx context.Context, req *api.QueryErasedUsersRequest) (*api.QueryErasedUsersResponse, error) {
	return ihttp.Call[api.QueryErasedUsersResponse](ctx, c.c, req)
}

// PerformAccountDeactivation implements api.ClientUserAPI.
func (c *Client) PerformAccountDeactivation(ctx context.Context, req *api.PerformAccountDeactivationRequest) (*api.PerformAccountDeactivationResponse, error) {
	return ihttp.Call[api.PerformAccountDeactivationResponse](ctx, c.c, req)
}

// QueryRemoteKeys implements api.ClientUserAPI.
func (c *Client) QueryRemoteKeys(ctx context.Context, req *api.QueryRemoteKeysRequest) (*api.QueryRemoteKeysResponse, error) {
	return ihttp.Call[api.QueryRemoteKeysResponse](ctx, c.c, req)
}

// QueryOutputRecords implements api.ReplayAPI.
func (c *Client) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	return ihttp.Call[api.QueryOutputRecordsResponse](ctx, c.c, req)
}
