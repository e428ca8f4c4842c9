package routing

import (
	"net/http"
	"strings"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

const (
	loginTypePassword  = "m.login.password"
	identifierTypeUser = "m.id.user"
)

type loginRequest struct {
	Type       string `json:"type"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	// User is the deprecated form of identifier.user.
	User                     string  `json:"user"`
	Password                 string  `json:"password"`
	DeviceID                 *string `json:"device_id"`
	InitialDeviceDisplayName *string `json:"initial_device_display_name"`
}

// localpart is the account the request names: a localpart or a full user ID on this
// server, case-insensitively (localparts are lower case).
func (req *loginRequest) localpart(serverName string) (string, error) {
	user := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != identifierTypeUser {
			return "", matrixerr.BadRequest("unsupported identifier type " + req.Identifier.Type)
		}
		user = req.Identifier.User
	}
	if user == "" {
		return "", matrixerr.MissingParam("identifier.user is required")
	}
	user = strings.ToLower(user)
	if strings.HasPrefix(user, "@") {
		local, domain, ok := strings.Cut(user[1:], ":")
		if !ok || domain != strings.ToLower(serverName) {
			return "", matrixerr.Forbidden("invalid username or password")
		}
		user = local
	}
	if len(user) > 255 {
		return "", matrixerr.Forbidden("invalid username or password")
	}
	return user, nil
}

// LoginFlows is GET /login.
func (a *Accounts) LoginFlows(*http.Request) (httputil.Response, error) {
	return httputil.OK(map[string]any{"flows": []map[string]string{{"type": loginTypePassword}, {"type": authTypeAppService}}}), nil
}

// Login is POST /login. Password attempts are limited per account as well as per IP.
func (a *Accounts) Login(r *http.Request) (httputil.Response, error) {
	var req loginRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return httputil.Response{}, err
	}
	if req.Type != loginTypePassword && req.Type != authTypeAppService {
		return httputil.Response{}, matrixerr.BadRequest("unsupported login type " + req.Type)
	}
	localpart, err := req.localpart(a.ServerName)
	if err != nil {
		return httputil.Response{}, err
	}
	if err = checkDeviceID(req.DeviceID); err != nil {
		return httputil.Response{}, err
	}
	if req.Type == authTypeAppService {
		return a.loginAppService(r, localpart, &req)
	}
	if err = a.loginAttempts.Allow(localpart); err != nil {
		return httputil.Response{}, err
	}
	res, err := a.UserAPI.QueryAccountByPassword(r.Context(), &uapi.QueryAccountByPasswordRequest{Localpart: localpart, Password: req.Password})
	if err != nil {
		return httputil.Response{}, err
	}
	return a.loginDevice(r, res.Account.Localpart, req.DeviceID, req.InitialDeviceDisplayName)
}

// Logout is POST /logout: the caller's device and its token are deleted.
func (a *Accounts) Logout(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	_, err := a.UserAPI.PerformDeviceDeletion(r.Context(), &uapi.PerformDeviceDeletionRequest{UserID: dev.UserID, DeviceIDs: []string{dev.DeviceID}})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// LogoutAll is POST /logout/all: every device of the caller is deleted.
func (a *Accounts) LogoutAll(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	_, err := a.UserAPI.PerformDeviceDeletion(r.Context(), &uapi.PerformDeviceDeletionRequest{UserID: dev.UserID, All: true})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// WhoAmI is GET /account/whoami.
func (a *Accounts) WhoAmI(_ *http.Request, dev *uapi.Device) (httputil.Response, error) {
	return httputil.OK(map[string]any{"user_id": dev.UserID, "device_id": dev.DeviceID, "is_guest": dev.IsGuest()}), nil
}

// loginAppService is POST /login with type m.login.application_service: the service (its
// as_token, else 401) logs in as a registered user of its namespace (M_EXCLUSIVE outside
// it, 403 M_FORBIDDEN for a user it has not registered) on a new device, with no password.
func (a *Accounts) loginAppService(r *http.Request, localpart string, req *loginRequest) (httputil.Response, error) {
	as, err := appServiceOf(r, a.AppServices)
	if err != nil {
		return httputil.Response{}, err
	}
	if !as.OwnsUserID("@" + localpart + ":" + a.ServerName) {
		return httputil.Response{}, matrixerr.Exclusive("the user ID is outside the application service's namespace")
	}
	res, err := a.UserAPI.QueryAccount(r.Context(), &uapi.QueryAccountRequest{Localpart: localpart})
	if err != nil {
		return httputil.Response{}, err
	}
	if res.Account == nil {
		return httputil.Response{}, matrixerr.Forbidden("the application service has not registered this user")
	}
	return a.loginDevice(r, localpart, req.DeviceID, req.InitialDeviceDisplayName)
}
