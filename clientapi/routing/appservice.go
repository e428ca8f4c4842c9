package routing

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	asapi "github.com/matrix-org/dendrite/appservice/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// authTypeAppService is the registration type with which an application service creates
// a user of its namespace, with no password and no User-Interactive Authentication.
const authTypeAppService = "m.login.application_service"

// isAppServiceType reports whether a registration body's top-level "type" (the form
// application services send) is m.login.application_service.
func isAppServiceType(raw json.RawMessage) bool {
	var t string
	return raw != nil && json.Unmarshal(raw, &t) == nil && t == authTypeAppService
}

// appServiceOf is the application service whose as_token the request carries: 401
// M_MISSING_TOKEN or M_UNKNOWN_TOKEN otherwise.
func appServiceOf(r *http.Request, services *config.AppServiceAPI) (*config.ApplicationService, error) {
	token, err := httputil.AccessToken(r)
	if err != nil {
		return nil, err
	}
	as := services.AppServiceByToken(token)
	if as == nil {
		return nil, matrixerr.UnknownToken("not an application service's token")
	}
	return as, nil
}

// registerAppService is POST /register with type m.login.application_service: the service
// (its as_token) creates a passwordless user in its users namespace (M_EXCLUSIVE outside
// it), whether or not registration is open. The user is logged in on a new device unless
// inhibit_login.
func (a *Accounts) registerAppService(r *http.Request, params map[string]json.RawMessage) (httputil.Response, error) {
	as, err := appServiceOf(r, a.AppServices)
	if err != nil {
		return httputil.Response{}, err
	}
	var req registerRequest
	if err := decodeParams(params, &req); err != nil {
		return httputil.Response{}, err
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return httputil.Response{}, err
	}
	localpart := strings.ToLower(req.Username)
	if full, ok := strings.CutPrefix(localpart, "@"); ok {
		// Some services send the whole user ID.
		localpart, _, _ = strings.Cut(full, ":")
	}
	if localpart == "" {
		return httputil.Response{}, matrixerr.MissingParam("username is required")
	}
	userID := "@" + localpart + ":" + a.ServerName
	if !as.OwnsUserID(userID) {
		return httputil.Response{}, matrixerr.Exclusive("the user ID is outside the application service's namespace")
	}
	acc, err := a.createAccount(r.Context(), localpart, "", uapi.AccountTypeAppService)
	if err != nil {
		return httputil.Response{}, err
	}
	return a.registered(r, acc.UserID, &req)
}

// askAppServiceForUser asks the application services whose namespace has userID, a local
// user without an account, to create it (GET /_matrix/app/v1/users/{userId}) before the
// request that names it goes on. A service that does not answer leaves the user missing.
func (rm *Rooms) askAppServiceForUser(ctx context.Context, userID string) error {
	if rm.AppServiceQueries == nil || rm.AppServices.OwnerOfUserID(userID) == nil || !rm.isLocalUser(userID) {
		return nil
	}
	res, err := rm.UserAPI.QueryAccount(ctx, &uapi.QueryAccountRequest{Localpart: localpartOf(userID)})
	if err != nil || res.Account != nil {
		return err
	}
	_, err = rm.AppServiceQueries.QueryUserIDExists(ctx, &asapi.QueryUserIDExistsRequest{UserID: userID})
	return err
}

// askAppServiceForAlias asks the application services whose namespace has the alias,
// which names no room, to create it (GET /_matrix/app/v1/rooms/{roomAlias}); true when one
// says it did.
func (rm *Rooms) askAppServiceForAlias(ctx context.Context, alias string) (bool, error) {
	if rm.AppServiceQueries == nil || rm.AppServices.OwnerOfAlias(alias) == nil {
		return false, nil
	}
	res, err := rm.AppServiceQueries.QueryRoomAliasExists(ctx, &asapi.QueryRoomAliasExistsRequest{Alias: alias})
	if err != nil {
		return false, err
	}
	return res.Exists, nil
}

// thirdPartyRoutes are the third-party lookups, answered by the application services that
// provide the protocol, and the services' own room directories.
func (rm *Rooms) thirdPartyRoutes() []httputil.Route {
	auth := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(DeviceLookup(rm.UserAPI), h)
	}
	get := http.MethodGet
	return []httputil.Route{
		{Name: "thirdPartyProtocols", Method: get, Path: "/thirdparty/protocols", Handler: auth(rm.ThirdPartyProtocols)},
		{Name: "thirdPartyProtocol", Method: get, Path: "/thirdparty/protocol/{protocol}", Handler: auth(rm.thirdParty(asapi.ThirdPartyProtocol))},
		{Name: "thirdPartyLocations", Method: get, Path: "/thirdparty/location/{protocol}", Handler: auth(rm.thirdParty(asapi.ThirdPartyLocation))},
		{Name: "thirdPartyUsers", Method: get, Path: "/thirdparty/user/{protocol}", Handler: auth(rm.thirdParty(asapi.ThirdPartyUser))},
		{Name: "thirdPartyLocationByAlias", Method: get, Path: "/thirdparty/location", Handler: auth(rm.thirdParty(asapi.ThirdPartyLocation))},
		{Name: "thirdPartyUserByID", Method: get, Path: "/thirdparty/user", Handler: auth(rm.thirdParty(asapi.ThirdPartyUser))},
		{Name: "setAppServiceRoomVisibility", Method: http.MethodPut, Path: "/directory/list/appservice/{networkID}/{roomID}", Handler: rm.SetAppServiceRoomVisibility},
		{Name: "deleteAppServiceRoomVisibility", Method: http.MethodDelete, Path: "/directory/list/appservice/{networkID}/{roomID}", Handler: rm.SetAppServiceRoomVisibility},
	}
}

// ThirdPartyProtocols is GET /thirdparty/protocols: every protocol the services provide.
func (rm *Rooms) ThirdPartyProtocols(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
	if rm.AppServiceQueries == nil {
		return httputil.OK(map[string]any{}), nil
	}
	res, err := rm.AppServiceQueries.QueryProtocols(r.Context(), &asapi.QueryProtocolsRequest{})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res.Protocols), nil
}

// thirdParty answers GET /thirdparty/{kind}[/{protocol}] from the services providing the
// protocol, with the query string (the access token removed) passed on: a protocol no
// service provides is 404 M_NOT_FOUND.
func (rm *Rooms) thirdParty(kind string) func(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
	return func(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
		protocol := httputil.Vars(r)["protocol"]
		if rm.AppServiceQueries == nil {
			return httputil.Response{}, matrixerr.NotFound("no application service provides this protocol")
		}
		query := r.URL.Query()
		query.Del("access_token")
		res, err := rm.AppServiceQueries.QueryThirdParty(r.Context(), &asapi.QueryThirdPartyRequest{Kind: kind, Protocol: protocol, Query: query})
		if err != nil {
			return httputil.Response{}, err
		}
		if !res.Found && (protocol != "" || kind == asapi.ThirdPartyProtocol) {
			return httputil.Response{}, matrixerr.NotFound("no application service provides this protocol")
		}
		if !res.Found {
			return httputil.OK([]any{}), nil
		}
		return httputil.OK(res.Result), nil
	}
}

// AppServicePing is POST /_matrix/client/v1/appservice/{appserviceId}/ping: the service
// (its as_token, and its own ID in the path, else 403 M_FORBIDDEN) asks the homeserver to
// ping it.
func (rm *Rooms) AppServicePing(r *http.Request) (httputil.Response, error) {
	as, err := appServiceOf(r, rm.AppServices)
	if err != nil {
		return httputil.Response{}, err
	}
	if as.ID != httputil.Vars(r)["appserviceID"] {
		return httputil.Response{}, matrixerr.Forbidden("the access token is not this application service's")
	}
	var body struct {
		TransactionID string `json:"transaction_id"`
	}
	if err := decodeOptional(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if rm.AppServiceQueries == nil {
		return httputil.Response{}, matrixerr.URLNotSet("the application service has no url")
	}
	res, err := rm.AppServiceQueries.PerformPing(r.Context(), &asapi.PerformPingRequest{ServiceID: as.ID, TransactionID: body.TransactionID})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}

// SetAppServiceRoomVisibility is PUT and DELETE
// /directory/list/appservice/{networkId}/{roomId}: an application service (its as_token)
// publishes a room in (or withdraws it from) its directory of a third-party network, which
// /publicRooms lists under third_party_instance_id "<appservice ID>|<network ID>", apart
// from the main directory.
func (rm *Rooms) SetAppServiceRoomVisibility(r *http.Request) (httputil.Response, error) {
	as, err := appServiceOf(r, rm.AppServices)
	if err != nil {
		return httputil.Response{}, err
	}
	roomID, err := roomIDVar(r)
	if err != nil {
		return httputil.Response{}, err
	}
	public := false
	if r.Method == http.MethodPut {
		var body struct {
			Visibility string `json:"visibility"`
		}
		if err := httputil.DecodeJSON(r, &body); err != nil {
			return httputil.Response{}, err
		}
		switch body.Visibility {
		case visibilityPublic:
			public = true
		case visibilityPrivate:
		default:
			return httputil.Response{}, matrixerr.InvalidParam("visibility must be public or private")
		}
	}
	network := as.ID + "|" + httputil.Vars(r)["networkID"]
	if _, err := rm.RSAPI.PerformSetRoomVisibility(r.Context(), &rsapi.PerformSetRoomVisibilityRequest{RoomID: roomID, Public: public, Network: network}); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}
