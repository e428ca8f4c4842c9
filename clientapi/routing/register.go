package routing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// maxPasswordBytes bounds passwords (as Synapse does): longer ones only cost hashing time.
const maxPasswordBytes = 512

// maxDeviceIDBytes bounds client-chosen device IDs.
const maxDeviceIDBytes = 255

// authTypeDummy is the only User-Interactive Authentication stage registration offers.
const authTypeDummy = "m.login.dummy"

type registerRequest struct {
	Username                 string  `json:"username"`
	Password                 string  `json:"password"`
	DeviceID                 *string `json:"device_id"`
	InitialDeviceDisplayName *string `json:"initial_device_display_name"`
	InhibitLogin             bool    `json:"inhibit_login"`
	// GuestAccessToken, with Username the guest's localpart, upgrades that guest account.
	GuestAccessToken string `json:"guest_access_token"`
}

// registerAuth is the auth object of a registration request.
type registerAuth struct {
	Type    string `json:"type"`
	Session string `json:"session"`
}

// loginResponse is the body of a successful registration or login.
type loginResponse struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token,omitempty"`
	DeviceID    string `json:"device_id,omitempty"`
	HomeServer  string `json:"home_server,omitempty"`
}

// uiaResponse is the 401 that starts (or continues) User-Interactive Authentication.
type uiaResponse struct {
	Flows   []uiaFlow      `json:"flows"`
	Params  map[string]any `json:"params"`
	Session string         `json:"session"`
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

// checkPassword applies the password rules of registration.
func checkPassword(password string) error {
	if password == "" {
		return matrixerr.MissingParam("a password is required")
	}
	if len(password) > maxPasswordBytes {
		return matrixerr.InvalidParam("the password is longer than 512 bytes")
	}
	return nil
}

// Register is POST /register, behind User-Interactive Authentication whose only stage is
// m.login.dummy. A request without an auth type starts a session (401 with the flows and
// the session ID); the session keeps that request's parameters, and later requests of the
// session use them, filling in only what the first left out. Everything a request could fail
// on is checked before the account is created, so a refused request stores nothing.
// Repeating the completing request of a session registers nobody new: it answers with the
// same user ID (and a new login unless inhibit_login).
func (a *Accounts) Register(r *http.Request) (httputil.Response, error) {
	switch r.URL.Query().Get("kind") {
	case "", "user":
	case "guest":
		// The spec's answer for a kind of account the server does not permit is 403
		// M_FORBIDDEN. Guest registration needs no authentication and does not depend on
		// registration_disabled, as in Synapse: guests are limited to the endpoints the guest
		// access module lists (GuestDeviceLookup).
		if a.Cfg.GuestsDisabled {
			return httputil.Response{}, matrixerr.Forbidden("guest registration is disabled on this server")
		}
		return a.registerGuest(r)
	default:
		return httputil.Response{}, matrixerr.InvalidParam("kind must be user or guest")
	}
	var params map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &params); err != nil {
		return httputil.Response{}, err
	}
	var auth registerAuth
	if raw, ok := params["auth"]; ok {
		if err := json.Unmarshal(raw, &auth); err != nil {
			return httputil.Response{}, matrixerr.BadJSON("auth is not an authentication object")
		}
		delete(params, "auth")
	}
	if auth.Type == authTypeAppService || isAppServiceType(params["type"]) {
		delete(params, "type")
		return a.registerAppService(r, params)
	}
	if a.Cfg.RegistrationDisabled {
		return httputil.Response{}, matrixerr.Forbidden("registration is disabled")
	}
	sess := a.registerSessions.get(auth.Session)
	if sess != nil {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		params = withDefaults(sess.params, params)
	}
	var req registerRequest
	if err := decodeParams(params, &req); err != nil {
		return httputil.Response{}, err
	}
	req.Username = strings.ToLower(req.Username)
	if auth.Type == authTypeDummy && sess != nil && sess.userID != "" {
		return a.registered(r, sess.userID, &req)
	}
	if err := a.checkRegisterRequest(r.Context(), &req); err != nil {
		return httputil.Response{}, err
	}
	if auth.Type == "" {
		session := auth.Session
		if sess == nil {
			var err error
			if session, err = a.registerSessions.start(params); err != nil {
				return httputil.Response{}, err
			}
		}
		return httputil.Response{Status: http.StatusUnauthorized, Body: uiaResponse{
			Flows: []uiaFlow{{Stages: []string{authTypeDummy}}}, Params: map[string]any{}, Session: session,
		}}, nil
	}
	if auth.Type != authTypeDummy {
		return httputil.Response{}, matrixerr.BadRequest("unsupported authentication type " + auth.Type)
	}
	if err := checkPassword(req.Password); err != nil {
		return httputil.Response{}, err
	}
	var acc *uapi.Account
	var err error
	if req.GuestAccessToken != "" {
		acc, err = a.upgradeGuest(r.Context(), &req)
	} else {
		acc, err = a.createAccount(r.Context(), req.Username, req.Password, uapi.AccountTypeUser)
	}
	if err != nil {
		return httputil.Response{}, err
	}
	if sess != nil {
		sess.userID = acc.UserID
	}
	return a.registered(r, acc.UserID, &req)
}

// withDefaults is a session's parameters completed by those of a later request that the
// session lacks.
func withDefaults(session, later map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(session)+len(later))
	for k, v := range later {
		out[k] = v
	}
	for k, v := range session {
		out[k] = v
	}
	return out
}

// decodeParams decodes a registration request's parameters into req.
func decodeParams(params map[string]json.RawMessage, req *registerRequest) error {
	b, err := json.Marshal(params)
	if err != nil {
		return err
	}
	if err = json.Unmarshal(b, req); err != nil {
		return matrixerr.BadJSON("the registration parameters have the wrong types")
	}
	return nil
}

// checkRegisterRequest checks the parameters a request gives (the password is required only
// by the request that completes authentication).
func (a *Accounts) checkRegisterRequest(ctx context.Context, req *registerRequest) error {
	if req.Password != "" {
		if err := checkPassword(req.Password); err != nil {
			return err
		}
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return err
	}
	if req.GuestAccessToken != "" {
		return a.checkGuestToken(ctx, req)
	}
	if req.Username != "" {
		return a.checkAvailable(ctx, req.Username)
	}
	return nil
}

// registerGuest is POST /register?kind=guest: a new guest account (random localpart, no
// password) logged in on a new device. The request body may name the device.
func (a *Accounts) registerGuest(r *http.Request) (httputil.Response, error) {
	var req struct {
		InitialDeviceDisplayName *string `json:"initial_device_display_name"`
	}
	if err := decodeOptional(r, &req); err != nil {
		return httputil.Response{}, err
	}
	acc, err := a.createAccount(r.Context(), "", "", uapi.AccountTypeGuest)
	if err != nil {
		return httputil.Response{}, err
	}
	return a.loginDevice(r, acc.Localpart, nil, req.InitialDeviceDisplayName)
}

// checkGuestToken checks that a registration's guest_access_token is a guest's whose
// localpart the request names: only that guest may upgrade its own account.
func (a *Accounts) checkGuestToken(ctx context.Context, req *registerRequest) error {
	if req.Username == "" {
		return matrixerr.MissingParam("username is required to upgrade a guest account")
	}
	res, err := a.UserAPI.QueryAccessToken(ctx, &uapi.QueryAccessTokenRequest{AccessToken: req.GuestAccessToken})
	if err != nil {
		return err
	}
	if res.Device == nil || !res.Device.IsGuest() || localpartOf(res.Device.UserID) != req.Username {
		return matrixerr.Forbidden("guest_access_token is not the token of this guest account")
	}
	return nil
}

// upgradeGuest makes the guest account of a checked guest_access_token an ordinary account.
func (a *Accounts) upgradeGuest(ctx context.Context, req *registerRequest) (*uapi.Account, error) {
	if err := a.checkGuestToken(ctx, req); err != nil {
		return nil, err
	}
	res, err := a.UserAPI.PerformGuestUpgrade(ctx, &uapi.PerformGuestUpgradeRequest{Localpart: req.Username, Password: req.Password})
	if err != nil {
		return nil, err
	}
	return res.Account, nil
}

// registered answers a completed registration of userID: a login on a new device, or the
// user ID alone with inhibit_login.
func (a *Accounts) registered(r *http.Request, userID string, req *registerRequest) (httputil.Response, error) {
	if req.InhibitLogin {
		return httputil.OK(loginResponse{UserID: userID}), nil
	}
	return a.loginDevice(r, localpartOf(userID), req.DeviceID, req.InitialDeviceDisplayName)
}

// checkDeviceID bounds client-chosen device IDs (the userapi checks too, but only after
// the account exists).
func checkDeviceID(deviceID *string) error {
	if deviceID != nil && len(*deviceID) > maxDeviceIDBytes {
		return matrixerr.InvalidParam("device_id is too long")
	}
	return nil
}

// checkAvailable fails with M_USER_IN_USE or M_INVALID_USERNAME, or M_EXCLUSIVE for a
// user ID in an application service's exclusive namespace.
func (a *Accounts) checkAvailable(ctx context.Context, localpart string) error {
	if a.AppServices.ExclusiveUserID("@"+localpart+":"+a.ServerName) != nil {
		return matrixerr.Exclusive("this username is reserved by an application service")
	}
	res, err := a.UserAPI.QueryLocalpartAvailable(ctx, &uapi.QueryLocalpartAvailableRequest{Localpart: localpart})
	if err != nil {
		return err
	}
	if !res.Available {
		return matrixerr.UserInUse("this username is taken")
	}
	return nil
}

// createAccount creates the account, choosing a random localpart when none is given.
func (a *Accounts) createAccount(ctx context.Context, localpart, password string, accType uapi.AccountType) (*uapi.Account, error) {
	generated := localpart == ""
	for attempt := 0; ; attempt++ {
		if generated {
			suffix, err := randomHex(8)
			if err != nil {
				return nil, err
			}
			localpart = "u" + suffix
		}
		res, err := a.UserAPI.PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: localpart, Password: password, AccountType: accType})
		var merr *matrixerr.Error
		if generated && attempt < 5 && errors.As(err, &merr) && merr.Code == "M_USER_IN_USE" {
			continue
		}
		if err != nil {
			return nil, err
		}
		return res.Account, nil
	}
}

// loginDevice creates a device for the account and answers with its access token.
func (a *Accounts) loginDevice(r *http.Request, localpart string, deviceID, displayName *string) (httputil.Response, error) {
	res, err := a.UserAPI.PerformDeviceCreation(r.Context(), &uapi.PerformDeviceCreationRequest{
		Localpart: localpart, DeviceID: deviceID, DisplayName: displayName, IP: clientIP(r), UserAgent: r.UserAgent(),
	})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(loginResponse{UserID: res.Device.UserID, AccessToken: res.AccessToken, DeviceID: res.Device.DeviceID, HomeServer: a.ServerName}), nil
}

// RegisterAvailable is GET /register/available.
func (a *Accounts) RegisterAvailable(r *http.Request) (httputil.Response, error) {
	username := r.URL.Query().Get("username")
	if username == "" {
		return httputil.Response{}, matrixerr.MissingParam("the username parameter is required")
	}
	if err := a.checkAvailable(r.Context(), username); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]bool{"available": true}), nil
}

// randomHex is n random bytes, hex-encoded.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
