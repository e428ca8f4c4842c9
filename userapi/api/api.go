// Package api is the userapi's contract: accounts, devices and access tokens, profiles,
// account data, filters, end-to-end encryption keys, and the OutputClientData and
// OutputKeyChangeEvent topics.
package api

import (
	"context"
	"encoding/json"
)

// AccountType distinguishes user, guest and admin accounts.
type AccountType int

const (
	// AccountTypeUser is an ordinary account.
	AccountTypeUser AccountType = 1
	// AccountTypeGuest is a guest account.
	AccountTypeGuest AccountType = 2
	// AccountTypeAdmin is a server administrator.
	AccountTypeAdmin AccountType = 3
	// AccountTypeAppService is a user an application service registered in its namespace
	// (m.login.application_service): it has no password.
	AccountTypeAppService AccountType = 4
)

// Device is a logged-in session: what an access token stands for.
type Device struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name"`
	LastSeenTS  int64  `json:"last_seen_ts"`
	LastSeenIP  string `json:"last_seen_ip"`
	// UserAgent is the User-Agent of the device's last login.
	UserAgent string `json:"user_agent,omitempty"`
	// AccountType is the type of the device's account; only QueryAccessToken fills it in.
	AccountType AccountType `json:"account_type,omitempty"`
	// AppServiceID is, for a request made with an application service's as_token, the
	// service's ID; the device is then the user the service acts as, with the DeviceID it
	// named (device_id) or none.
	AppServiceID string `json:"app_service_id,omitempty"`
	// NotRateLimited exempts the requests from the client rate limits (an application
	// service registered with rate_limited: false).
	NotRateLimited bool `json:"not_rate_limited,omitempty"`
}

// RateLimitExempt reports whether the client rate limits skip the device's requests.
func (d *Device) RateLimitExempt() bool {
	return d.NotRateLimited
}

// IsGuest reports whether the device belongs to a guest account.
func (d *Device) IsGuest() bool {
	return d.AccountType == AccountTypeGuest
}

// String is the device's user ID: rate limits are charged per user.
func (d *Device) String() string {
	return d.UserID
}

// Account is a local account.
type Account struct {
	UserID      string      `json:"user_id"`
	Localpart   string      `json:"localpart"`
	ServerName  string      `json:"server_name"`
	AccountType AccountType `json:"account_type"`
}

// QueryAccessTokenRequest looks up a token.
type QueryAccessTokenRequest struct {
	AccessToken string `json:"access_token"`
	// UserID is the user_id query parameter of the request: for an application service's
	// as_token, the user in its namespace it acts as (empty: its sender). Ignored for other
	// tokens.
	UserID string `json:"user_id,omitempty"`
	// DeviceID is the device_id query parameter: for an application service's as_token, the
	// device of that user it acts as (empty: none). Ignored for other tokens.
	DeviceID string `json:"device_id,omitempty"`
}

// QueryAccessTokenResponse is the token's device.
type QueryAccessTokenResponse struct {
	Device *Device `json:"device"`
}

// PerformAccountCreationRequest creates an account.
type PerformAccountCreationRequest struct {
	Localpart   string      `json:"localpart"`
	Password    string      `json:"password"`
	AccountType AccountType `json:"account_type"`
}

// PerformAccountCreationResponse is the new account.
type PerformAccountCreationResponse struct {
	Account *Account `json:"account"`
}

// PerformGuestUpgradeRequest turns a guest account into an ordinary account with a password.
type PerformGuestUpgradeRequest struct {
	Localpart string `json:"localpart"`
	Password  string `json:"password"`
}

// PerformGuestUpgradeResponse is the upgraded account.
type PerformGuestUpgradeResponse struct {
	Account *Account `json:"account"`
}

// PerformAccountDeactivationRequest deactivates a local account: no password, no devices.
type PerformAccountDeactivationRequest struct {
	Localpart string `json:"localpart"`
	// Erase also erases the account (POST /account/deactivate's erase): readers then serve
	// its events redacted to users and servers that could not see them when they were sent
	// (QueryErasedUsers).
	Erase bool `json:"erase,omitempty"`
}

// PerformAccountDeactivationResponse is empty.
type PerformAccountDeactivationResponse struct{}

// QueryErasedUsersRequest asks which of these users' accounts were erased. Users of other
// servers are never erased here: this server knows nothing of their erasure.
type QueryErasedUsersRequest struct {
	UserIDs []string `json:"user_ids"`
}

// QueryErasedUsersResponse lists the erased users among those asked about.
type QueryErasedUsersResponse struct {
	Erased []string `json:"erased"`
}

// ErasureAPI is what readers use to serve erased users' events redacted: the syncapi for
// /sync, /messages, /context and /event, the federationapi for the events it serves to
// other servers.
type ErasureAPI interface {
	QueryErasedUsers(ctx context.Context, req *QueryErasedUsersRequest) (*QueryErasedUsersResponse, error)
}

// QueryAccountRequest asks for a local account.
type QueryAccountRequest struct {
	Localpart string `json:"localpart"`
}

// QueryAccountResponse is the account, nil when there is none.
type QueryAccountResponse struct {
	Account *Account `json:"account,omitempty"`
}

// QueryLocalpartAvailableRequest asks whether a localpart is free.
type QueryLocalpartAvailableRequest struct {
	Localpart string `json:"localpart"`
}

// QueryLocalpartAvailableResponse answers it.
type QueryLocalpartAvailableResponse struct {
	Available bool `json:"available"`
}

// QueryAccountByPasswordRequest checks a password.
type QueryAccountByPasswordRequest struct {
	Localpart string `json:"localpart"`
	Password  string `json:"password"`
}

// PerformPasswordUpdateRequest sets an account's password; unless KeepDevices, every
// device but ExceptDeviceID is logged out.
type PerformPasswordUpdateRequest struct {
	Localpart      string `json:"localpart"`
	Password       string `json:"password"`
	KeepDevices    bool   `json:"keep_devices,omitempty"`
	ExceptDeviceID string `json:"except_device_id,omitempty"`
}

// PerformPasswordUpdateResponse is empty.
type PerformPasswordUpdateResponse struct{}

// QueryAccountByPasswordResponse is the account whose password matched.
type QueryAccountByPasswordResponse struct {
	Account *Account `json:"account"`
}

// PerformDeviceCreationRequest logs a device in.
type PerformDeviceCreationRequest struct {
	Localpart   string  `json:"localpart"`
	DeviceID    *string `json:"device_id,omitempty"`
	DisplayName *string `json:"display_name,omitempty"`
	IP          string  `json:"ip"`
	UserAgent   string  `json:"user_agent"`
}

// PerformDeviceCreationResponse is the device and its new token.
type PerformDeviceCreationResponse struct {
	Device      *Device `json:"device"`
	AccessToken string  `json:"access_token"`
}

// PerformDeviceDeletionRequest logs devices out: the listed DeviceIDs, or with All every
// device but ExceptDeviceID. All is explicit so that an empty list, which JSON may turn
// into a missing one, never means "every device".
type PerformDeviceDeletionRequest struct {
	UserID         string   `json:"user_id"`
	DeviceIDs      []string `json:"device_ids,omitempty"`
	All            bool     `json:"all,omitempty"`
	ExceptDeviceID string   `json:"except_device_id,omitempty"`
}

// PerformDeviceDeletionResponse is empty.
type PerformDeviceDeletionResponse struct{}

// QueryDevicesRequest lists a user's devices.
type QueryDevicesRequest struct {
	UserID string `json:"user_id"`
}

// QueryDevicesResponse lists devices.
type QueryDevicesResponse struct {
	Devices []Device `json:"devices"`
}

// PerformDeviceUpdateRequest renames a device.
type PerformDeviceUpdateRequest struct {
	UserID      string  `json:"user_id"`
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name"`
}

// PerformDeviceUpdateResponse is empty.
type PerformDeviceUpdateResponse struct{}

// QueryProfileRequest asks for a local user's profile.
type QueryProfileRequest struct {
	UserID string `json:"user_id"`
}

// QueryProfileResponse is the profile.
type QueryProfileResponse struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// PerformSetDisplayNameRequest sets a local user's display name.
type PerformSetDisplayNameRequest struct {
	Localpart   string `json:"localpart"`
	DisplayName string `json:"displayname"`
}

// PerformSetDisplayNameResponse says whether anything changed.
type PerformSetDisplayNameResponse struct {
	Changed bool `json:"changed"`
}

// PerformSetAvatarURLRequest sets a local user's avatar URL.
type PerformSetAvatarURLRequest struct {
	Localpart string `json:"localpart"`
	AvatarURL string `json:"avatar_url"`
}

// PerformSetAvatarURLResponse says whether anything changed.
type PerformSetAvatarURLResponse struct {
	Changed bool `json:"changed"`
}

// PerformAccountDataRequest stores account data; RoomID "" is global.
type PerformAccountDataRequest struct {
	UserID   string          `json:"user_id"`
	RoomID   string          `json:"room_id,omitempty"`
	DataType string          `json:"data_type"`
	Data     json.RawMessage `json:"data"`
}

// PerformAccountDataResponse is empty.
type PerformAccountDataResponse struct{}

// QueryAccountDataRequest reads account data; DataType "" means every type.
type QueryAccountDataRequest struct {
	UserID   string `json:"user_id"`
	RoomID   string `json:"room_id,omitempty"`
	DataType string `json:"data_type,omitempty"`
}

// QueryAccountDataResponse holds global and per-room account data by type.
type QueryAccountDataResponse struct {
	Global map[string]json.RawMessage            `json:"global"`
	Rooms  map[string]map[string]json.RawMessage `json:"rooms"`
}

// PerformRoomTagRequest adds (Content set) or removes (Content empty) one tag of a room in
// the user's m.tag room account data.
type PerformRoomTagRequest struct {
	UserID  string          `json:"user_id"`
	RoomID  string          `json:"room_id"`
	Tag     string          `json:"tag"`
	Content json.RawMessage `json:"content,omitempty"`
}

// PerformRoomTagResponse is empty.
type PerformRoomTagResponse struct{}

// PerformPutFilterRequest stores a filter.
type PerformPutFilterRequest struct {
	Localpart string          `json:"localpart"`
	Filter    json.RawMessage `json:"filter"`
}

// PerformPutFilterResponse is the filter's ID.
type PerformPutFilterResponse struct {
	FilterID string `json:"filter_id"`
}

// QueryFilterRequest reads a filter.
type QueryFilterRequest struct {
	Localpart string `json:"localpart"`
	FilterID  string `json:"filter_id"`
}

// QueryFilterResponse is the filter.
type QueryFilterResponse struct {
	Filter json.RawMessage `json:"filter"`
}

// ClientUserAPI is what clientapi uses.
type ClientUserAPI interface {
	ReplayAPI
	ErasureAPI
	QueryAccessToken(ctx context.Context, req *QueryAccessTokenRequest) (*QueryAccessTokenResponse, error)
	PerformAccountCreation(ctx context.Context, req *PerformAccountCreationRequest) (*PerformAccountCreationResponse, error)
	QueryLocalpartAvailable(ctx context.Context, req *QueryLocalpartAvailableRequest) (*QueryLocalpartAvailableResponse, error)
	PerformGuestUpgrade(ctx context.Context, req *PerformGuestUpgradeRequest) (*PerformGuestUpgradeResponse, error)
	QueryAccount(ctx context.Context, req *QueryAccountRequest) (*QueryAccountResponse, error)
	PerformAccountDeactivation(ctx context.Context, req *PerformAccountDeactivationRequest) (*PerformAccountDeactivationResponse, error)
	QueryAccountByPassword(ctx context.Context, req *QueryAccountByPasswordRequest) (*QueryAccountByPasswordResponse, error)
	PerformThreePID(ctx context.Context, req *PerformThreePIDRequest) (*PerformThreePIDResponse, error)
	QueryThreePIDs(ctx context.Context, req *QueryThreePIDsRequest) (*QueryThreePIDsResponse, error)
	PerformPasswordUpdate(ctx context.Context, req *PerformPasswordUpdateRequest) (*PerformPasswordUpdateResponse, error)
	PerformDeviceCreation(ctx context.Context, req *PerformDeviceCreationRequest) (*PerformDeviceCreationResponse, error)
	PerformDeviceDeletion(ctx context.Context, req *PerformDeviceDeletionRequest) (*PerformDeviceDeletionResponse, error)
	QueryDevices(ctx context.Context, req *QueryDevicesRequest) (*QueryDevicesResponse, error)
	PerformDeviceUpdate(ctx context.Context, req *PerformDeviceUpdateRequest) (*PerformDeviceUpdateResponse, error)
	QueryProfile(ctx context.Context, req *QueryProfileRequest) (*QueryProfileResponse, error)
	PerformSetDisplayName(ctx context.Context, req *PerformSetDisplayNameRequest) (*PerformSetDisplayNameResponse, error)
	PerformSetAvatarURL(ctx context.Context, req *PerformSetAvatarURLRequest) (*PerformSetAvatarURLResponse, error)
	PerformAccountData(ctx context.Context, req *PerformAccountDataRequest) (*PerformAccountDataResponse, error)
	QueryAccountData(ctx context.Context, req *QueryAccountDataRequest) (*QueryAccountDataResponse, error)
	PerformRoomTag(ctx context.Context, req *PerformRoomTagRequest) (*PerformRoomTagResponse, error)
	PerformPutFilter(ctx context.Context, req *PerformPutFilterRequest) (*PerformPutFilterResponse, error)
	QueryFilter(ctx context.Context, req *QueryFilterRequest) (*QueryFilterResponse, error)
	PerformUploadKeys(ctx context.Context, req *PerformUploadKeysRequest) (*PerformUploadKeysResponse, error)
	QueryKeys(ctx context.Context, req *QueryKeysRequest) (*QueryKeysResponse, error)
	// QueryRemoteKeys answers POST /keys/query for other servers' users from the cache of
	// their device lists, fetching (GET /user/devices) and caching each list that is not
	// cached or is stale; a list that cannot be fetched is answered from a stale cache, else
	// its server is in Failures.
	QueryRemoteKeys(ctx context.Context, req *QueryRemoteKeysRequest) (*QueryRemoteKeysResponse, error)
	PerformClaimKeys(ctx context.Context, req *PerformClaimKeysRequest) (*PerformClaimKeysResponse, error)
	QueryOneTimeKeyCounts(ctx context.Context, req *QueryOneTimeKeyCountsRequest) (*QueryOneTimeKeyCountsResponse, error)
	PerformMarkRemoteDeviceListsStale(ctx context.Context, req *PerformMarkRemoteDeviceListsStaleRequest) (*PerformMarkRemoteDeviceListsStaleResponse, error)
	PerformUploadDeviceSigningKeys(ctx context.Context, req *PerformUploadDeviceSigningKeysRequest) (*PerformUploadDeviceSigningKeysResponse, error)
	PerformUploadSignatures(ctx context.Context, req *PerformUploadSignaturesRequest) (*PerformUploadSignaturesResponse, error)
	QueryDeviceList(ctx context.Context, req *QueryDeviceListRequest) (*QueryDeviceListResponse, error)
	KeyBackupAPI
}

// FederationUserAPI is what the federationapi uses: profiles for /query/profile, local
// users' keys for /user/keys/query, /user/keys/claim and /user/devices, and erasures for
// the events it serves.
type FederationUserAPI interface {
	// QueryAccount tells local guests apart when another server revokes a room's guest access.
	QueryAccount(ctx context.Context, req *QueryAccountRequest) (*QueryAccountResponse, error)
	ErasureAPI
	QueryProfile(ctx context.Context, req *QueryProfileRequest) (*QueryProfileResponse, error)
	QueryKeys(ctx context.Context, req *QueryKeysRequest) (*QueryKeysResponse, error)
	PerformClaimKeys(ctx context.Context, req *PerformClaimKeysRequest) (*PerformClaimKeysResponse, error)
	QueryDeviceList(ctx context.Context, req *QueryDeviceListRequest) (*QueryDeviceListResponse, error)
}
