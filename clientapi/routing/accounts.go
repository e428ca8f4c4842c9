package routing

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/openid"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Per-account password attempts (successful or not), on top of the per-IP limit that
// httputil.Server applies to every unauthenticated request: guessing one account's
// password from many addresses stays slow.
const (
	loginAttemptsPerSecond = 0.2
	loginAttemptsBurst     = 10
)

// Accounts serves registration, login and logout, profiles, devices, account data,
// filters, push rules, capabilities and the versions list. Accounts live in the userapi;
// these handlers only validate and translate.
type Accounts struct {
	Cfg        *config.ClientAPI
	ServerName string
	UserAPI    uapi.ClientUserAPI
	// AppServices are the registered application services (their users and exclusive
	// namespaces); never nil.
	AppServices *config.AppServiceAPI
	// ProfileChanged, when set, is called after a user's display name or avatar changed,
	// so that their member events follow.
	ProfileChanged func(ctx context.Context, userID string) error
	// OpenID issues the tokens of POST /user/{userId}/openid/request_token.
	OpenID *openid.Tokens
	// Federation asks other servers for their users' profiles (nil: remote profiles are
	// not found).
	Federation fapi.ClientFederationAPI
	// IdentityServers binds and unbinds users' 3PIDs on identity servers (nil: 3PID
	// binding is refused, unbinding reports no-support).
	IdentityServers *identity.Client

	once   sync.Once
	nonces *nonceStore
	// registerSessions are the User-Interactive Authentication sessions of registration.
	registerSessions *registerSessionStore
	loginAttempts    *httputil.RateLimiter
	// pushRuleLocks serialize the read-modify-write of one user's push rules (striped by
	// user ID).
	pushRuleLocks [64]sync.Mutex
}

// DeviceLookup resolves access tokens through the userapi: M_UNKNOWN_TOKEN for a token
// that names no device, M_GUEST_ACCESS_FORBIDDEN for a guest's token. Endpoints that the
// spec opens to guests use GuestDeviceLookup instead.
func DeviceLookup(u uapi.ClientUserAPI) func(ctx context.Context, token string) (*uapi.Device, error) {
	lookup := GuestDeviceLookup(u)
	return func(ctx context.Context, token string) (*uapi.Device, error) {
		dev, err := lookup(ctx, token)
		if err != nil {
			return nil, err
		}
		if dev.IsGuest() {
			return nil, matrixerr.GuestAccessForbidden("guest accounts may not use this endpoint")
		}
		return dev, nil
	}
}

// GuestDeviceLookup resolves access tokens, guests' included, for the endpoints the spec's
// guest access module allows guests: M_UNKNOWN_TOKEN for a token that names no device. An
// application service's as_token resolves to the user it acts as (the user_id parameter,
// else its sender), 403 M_FORBIDDEN outside its namespace, and to that user's device named
// by the device_id parameter, 400 M_UNKNOWN_DEVICE for a device the user does not have.
func GuestDeviceLookup(u uapi.ClientUserAPI) func(ctx context.Context, token string) (*uapi.Device, error) {
	return func(ctx context.Context, token string) (*uapi.Device, error) {
		res, err := u.QueryAccessToken(ctx, &uapi.QueryAccessTokenRequest{AccessToken: token, UserID: httputil.AssertedUserID(ctx), DeviceID: httputil.AssertedDeviceID(ctx)})
		if err != nil {
			return nil, err
		}
		if res.Device == nil {
			return nil, matrixerr.UnknownToken("unknown access token")
		}
		return res.Device, nil
	}
}

// Routes lists the account endpoints with their absolute paths.
func (a *Accounts) Routes() []httputil.Route {
	a.once.Do(func() {
		a.nonces = newNonceStore()
		a.registerSessions = newRegisterSessionStore()
		a.loginAttempts = httputil.NewRateLimiter(loginAttemptsPerSecond, loginAttemptsBurst, nil)
	})
	auth := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(DeviceLookup(a.UserAPI), h)
	}
	guest := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(GuestDeviceLookup(a.UserAPI), h)
	}
	get, put, post := http.MethodGet, http.MethodPut, http.MethodPost
	routes := []httputil.Route{
		{Name: "register", Method: post, Path: "/register", Handler: a.Register},
		{Name: "registerAvailable", Method: get, Path: "/register/available", Handler: a.RegisterAvailable},
		{Name: "loginFlows", Method: get, Path: "/login", Handler: a.LoginFlows},
		{Name: "login", Method: post, Path: "/login", Handler: a.Login},
		{Name: "logout", Method: post, Path: "/logout", Handler: auth(a.Logout)},
		{Name: "logoutAll", Method: post, Path: "/logout/all", Handler: auth(a.LogoutAll)},
		{Name: "whoami", Method: get, Path: "/account/whoami", Handler: guest(a.WhoAmI)},
		{Name: "capabilities", Method: get, Path: "/capabilities", Handler: auth(a.Capabilities)},
		{Name: "profile", Method: get, Path: "/profile/{userID}", Handler: a.GetProfile},
		{Name: "getDisplayName", Method: get, Path: "/profile/{userID}/displayname", Handler: a.GetDisplayName},
		{Name: "setDisplayName", Method: put, Path: "/profile/{userID}/displayname", Handler: guest(a.SetDisplayName)},
		{Name: "getAvatarURL", Method: get, Path: "/profile/{userID}/avatar_url", Handler: a.GetAvatarURL},
		{Name: "setAvatarURL", Method: put, Path: "/profile/{userID}/avatar_url", Handler: auth(a.SetAvatarURL)},
		{Name: "putFilter", Method: post, Path: "/user/{userID}/filter", Handler: auth(a.PutFilter)},
		{Name: "openIDRequestToken", Method: post, Path: "/user/{userID}/openid/request_token", Handler: auth(a.OpenIDRequestToken)},
		{Name: "getFilter", Method: get, Path: "/user/{userID}/filter/{filterID}", Handler: auth(a.GetFilter)},
		{Name: "getAccountData", Method: get, Path: "/user/{userID}/account_data/{type}", Handler: auth(a.GetAccountData)},
		{Name: "putAccountData", Method: put, Path: "/user/{userID}/account_data/{type}", Handler: auth(a.PutAccountData)},
		{Name: "getRoomAccountData", Method: get, Path: "/user/{userID}/rooms/{roomID}/account_data/{type}", Handler: auth(a.GetAccountData)},
		{Name: "putRoomAccountData", Method: put, Path: "/user/{userID}/rooms/{roomID}/account_data/{type}", Handler: auth(a.PutAccountData)},
		{Name: "getTags", Method: get, Path: "/user/{userID}/rooms/{roomID}/tags", Handler: auth(a.GetTags)},
		{Name: "putTag", Method: put, Path: "/user/{userID}/rooms/{roomID}/tags/{tag}", Handler: auth(a.PutTag)},
		{Name: "deleteTag", Method: http.MethodDelete, Path: "/user/{userID}/rooms/{roomID}/tags/{tag}", Handler: auth(a.DeleteTag)},
		{Name: "getPushRules", Method: get, Path: "/pushrules/{path:.*}", Handler: auth(a.GetPushRules)},
		{Name: "putPushRule", Method: put, Path: "/pushrules/{path:.*}", Handler: auth(a.PutPushRule)},
		{Name: "deletePushRule", Method: http.MethodDelete, Path: "/pushrules/{path:.*}", Handler: auth(a.DeletePushRule)},
		{Name: "devices", Method: get, Path: "/devices", Handler: guest(a.Devices)},
		{Name: "device", Method: get, Path: "/devices/{deviceID}", Handler: guest(a.Device)},
		{Name: "updateDevice", Method: put, Path: "/devices/{deviceID}", Handler: guest(a.UpdateDevice)},
		{Name: "deleteDevice", Method: http.MethodDelete, Path: "/devices/{deviceID}", Handler: auth(a.DeleteDevice)},
		{Name: "deleteDevices", Method: post, Path: "/delete_devices", Handler: auth(a.DeleteDevices)},
		{Name: "changePassword", Method: post, Path: "/account/password", Handler: auth(a.ChangePassword)},
		{Name: "deactivate", Method: post, Path: "/account/deactivate", Handler: auth(a.DeactivateAccount)},
		{Name: "whois", Method: get, Path: "/admin/whois/{userID}", Handler: auth(a.WhoIs)},
	}
	threePIDs := a.threePIDRoutes(auth)
	routes = append(routes, threePIDs...)
	out := append(clientPaths(routes), unstableThreePIDRoutes(threePIDs)...)
	return append(out,
		httputil.Route{Name: "versions", Method: get, Path: "/_matrix/client/versions", Handler: a.Versions},
		httputil.Route{Name: "sharedSecretNonce", Method: get, Path: "/_synapse/admin/v1/register", Handler: a.SharedSecretNonce},
		httputil.Route{Name: "sharedSecretRegister", Method: post, Path: "/_synapse/admin/v1/register", Handler: a.SharedSecretRegister},
	)
}

// specVersions are the client-server API versions whose endpoints clients rely on here.
var specVersions = []string{
	"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
}

// unstableFeatures are the unstable features /versions advertises: simplified sliding sync
// (MSC4186), which Element X and matrix-rust-sdk clients require, served by the sync API.
var unstableFeatures = map[string]bool{"org.matrix.simplified_msc3575": true}

// Versions is GET /_matrix/client/versions.
func (a *Accounts) Versions(*http.Request) (httputil.Response, error) {
	return httputil.OK(map[string]any{"versions": specVersions, "unstable_features": unstableFeatures}), nil
}

// Capabilities is GET /capabilities. The room versions offered are exactly those that
// createRoom accepts.
func (a *Accounts) Capabilities(*http.Request, *uapi.Device) (httputil.Response, error) {
	available := map[string]string{}
	for v := range gomatrixserverlib.RoomVersions() {
		if supportedRoomVersion(v) {
			available[string(v)] = "stable"
		}
	}
	enabled := func(b bool) map[string]bool { return map[string]bool{"enabled": b} }
	return httputil.OK(map[string]any{"capabilities": map[string]any{
		"m.change_password": enabled(true),
		"m.set_displayname": enabled(true),
		"m.set_avatar_url":  enabled(true),
		"m.3pid_changes":    enabled(false),
		"m.room_versions":   map[string]any{"default": string(DefaultRoomVersion), "available": available},
	}}), nil
}

// userIDVar returns the {userID} path variable, which must be the caller's own for
// anything that reads or changes private data.
func userIDVar(r *http.Request, dev *uapi.Device) (string, error) {
	userID := httputil.Vars(r)["userID"]
	if userID != dev.UserID {
		return "", matrixerr.Forbidden("you can only access your own data")
	}
	return userID, nil
}

// localpartOf is the localpart of a user ID this server issued.
func localpartOf(userID string) string {
	local, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return local
}

// clientIP is the request's peer address without the port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// OpenIDRequestToken is POST /user/{userId}/openid/request_token: a token that a third party
// exchanges for the user's ID at GET /_matrix/federation/v1/openid/userinfo, valid for
// openid.Lifetime. Only for the authenticated user (403 M_FORBIDDEN otherwise).
func (a *Accounts) OpenIDRequestToken(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	if httputil.Vars(r)["userID"] != dev.UserID {
		return httputil.Response{}, matrixerr.Forbidden("you can only request OpenID tokens for yourself")
	}
	var body struct{}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{
		"access_token":       a.OpenID.Issue(dev.UserID, time.Now()),
		"token_type":         "Bearer",
		"matrix_server_name": a.ServerName,
		"expires_in":         int64(openid.Lifetime / time.Second),
	}), nil
}
