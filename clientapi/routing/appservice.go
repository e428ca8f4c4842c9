package routing

import (
	"context"
	"encoding/json"
	asapi "github.com/matrix-org/dendrite/appservice/api"
	"net/http"
	"strings"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
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
