package routing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"

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
	Auth                     *struct {
		Type    string `json:"type"`
		Session string `json:"session"`
	} `json:"auth"`
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

// Register is POST /register. Everything a request could fail on is checked before the
// account is created, so a refused request stores nothing. The only UIA stage is
// m.login.dummy, which proves nothing: sessions therefore carry no server-side state and
// any session the client echoes is accepted, which also works across several clientapi
// processes.
func (a *Accounts) Register(r *http.Request) (httputil.Response, error) {
	switch r.URL.Query().Get("kind") {
	case "", "user":
	case "guest":
		// The spec's answer for a kind of account the server does not permit is 403
		// M_FORBIDDEN. Guest access is an optional module; it is not offered yet, whatever
		// client_api.guests_disabled says, because the room endpoints do not enforce the
		// limits the spec sets for guests (setup warns when the key asks for guests).
		if a.Cfg.GuestsDisabled {
			return httputil.Response{}, matrixerr.Forbidden("guest registration is disabled on this server")
		}
		return httputil.Response{}, matrixerr.Forbidden("guest access is not available on this server")
	default:
		return httputil.Response{}, matrixerr.InvalidParam("kind must be user or guest")
	}
	if a.Cfg.RegistrationDisabled {
		return httputil.Response{}, matrixerr.Forbidden("registration is disabled")
	}
	var req registerRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return httputil.Response{}, err
	}
	if err := checkPassword(req.Password); err != nil {
		return httputil.Response{}, err
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return httputil.Response{}, err
	}
	if req.Username != "" {
		if err := a.checkAvailable(r.Context(), req.Username); err != nil {
			return httputil.Response{}, err
		}
	}
	if req.Auth == nil || req.Auth.Type == "" {
		session, err := randomHex(16)
		if err != nil {
			return httputil.Response{}, err
		}
		return httputil.Response{Status: http.StatusUnauthorized, Body: uiaResponse{
			Flows: []uiaFlow{{Stages: []string{authTypeDummy}}}, Params: map[string]any{}, Session: session,
		}}, nil
	}
	if req.Auth.Type != authTypeDummy {
		return httputil.Response{}, matrixerr.BadRequest("unsupported authentication type " + req.Auth.Type)
	}
	acc, err := a.createAccount(r.Context(), req.Username, req.Password, uapi.AccountTypeUser)
	if err != nil {
		return httputil.Response{}, err
	}
	if req.InhibitLogin {
		return httputil.OK(loginResponse{UserID: acc.UserID}), nil
	}
	return a.loginDevice(r, acc.Localpart, req.DeviceID, req.InitialDeviceDisplayName)
}

// checkDeviceID bounds client-chosen device IDs (the userapi checks too, but only after
// the account exists).
func checkDeviceID(deviceID *string) error {
	if deviceID != nil && len(*deviceID) > maxDeviceIDBytes {
		return matrixerr.InvalidParam("device_id is too long")
	}
	return nil
}

// checkAvailable fails with M_USER_IN_USE or M_INVALID_USERNAME.
func (a *Accounts) checkAvailable(ctx context.Context, localpart string) error {
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
