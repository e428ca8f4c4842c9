package routing

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// uiaError is a failed User-Interactive Authentication stage: the flows again, with the
// reason.
type uiaError struct {
	uiaResponse
	// Completed lists the stages done: none, as the only stage is the one that failed.
	Completed []string `json:"completed"`
	ErrCode   string   `json:"errcode"`
	Error     string   `json:"error"`
}

// sessionNonceBytes is the random part of a password session's ID.
const sessionNonceBytes = 16

// operationDigest identifies the request a User-Interactive Authentication session is for:
// 16 hex digits of SHA-256 over the user, method and path.
func operationDigest(r *http.Request, userID string) string {
	sum := sha256.Sum256([]byte(userID + "\x00" + r.Method + "\x00" + r.URL.EscapedPath()))
	return hex.EncodeToString(sum[:8])
}

// passwordFlows is the one flow of sensitive account operations: the user's password.
var passwordFlows = []uiaFlow{{Stages: []string{loginTypePassword}}}

// requirePassword runs User-Interactive Authentication with one stage, m.login.password,
// before an operation on the caller's account (deleting devices, changing the password).
// It returns nil when auth proves the caller's password, else the 401 to answer with. The
// stage proves everything, so a session carries no server-side state: its ID is random
// followed by a digest of the operation (user, method and path), and a session the server
// handed out for another operation is refused with 403 M_FORBIDDEN, as the spec binds a
// session to one API call. A session ID in another form (or none) is accepted with the
// right password. An application service acting as a user of its namespace is not asked
// (the spec's application service API, "Device management": its users have no password,
// and it controls them fully).
func (a *Accounts) requirePassword(r *http.Request, dev *uapi.Device, auth json.RawMessage) (*httputil.Response, error) {
	if dev.AppServiceID != "" {
		return nil, nil
	}
	nonce, err := randomHex(sessionNonceBytes)
	if err != nil {
		return nil, err
	}
	op := operationDigest(r, dev.UserID)
	challenge := uiaResponse{Flows: passwordFlows, Params: map[string]any{}, Session: nonce + op}
	if len(auth) == 0 || string(auth) == "null" {
		return &httputil.Response{Status: http.StatusUnauthorized, Body: challenge}, nil
	}
	var req loginRequest
	var sess struct {
		Session string `json:"session"`
	}
	if json.Unmarshal(auth, &req) != nil || json.Unmarshal(auth, &sess) != nil {
		return nil, matrixerr.BadJSON("auth is not an authentication object")
	}
	if len(sess.Session) == 2*sessionNonceBytes+len(op) && sess.Session[2*sessionNonceBytes:] != op {
		return nil, matrixerr.Forbidden("the authentication session belongs to another request")
	}
	if req.Type != loginTypePassword {
		return &httputil.Response{Status: http.StatusUnauthorized, Body: uiaError{uiaResponse: challenge, Completed: []string{},
			ErrCode: "M_UNRECOGNIZED", Error: "unsupported authentication type " + req.Type}}, nil
	}
	localpart, err := req.localpart(a.ServerName)
	if err != nil {
		return nil, err
	}
	if localpart != localpartOf(dev.UserID) {
		return nil, matrixerr.Forbidden("the authentication is for another user")
	}
	if err = a.loginAttempts.Allow(localpart); err != nil {
		return nil, err
	}
	if _, err = a.UserAPI.QueryAccountByPassword(r.Context(), &uapi.QueryAccountByPasswordRequest{Localpart: localpart, Password: req.Password}); err != nil {
		var merr *matrixerr.Error
		if asMatrixErr(err, &merr) && merr.Code == "M_FORBIDDEN" {
			return &httputil.Response{Status: http.StatusUnauthorized, Body: uiaError{uiaResponse: challenge, Completed: []string{},
				ErrCode: "M_FORBIDDEN", Error: "invalid password"}}, nil
		}
		return nil, err
	}
	return nil, nil
}

// DeleteDevice is DELETE /devices/{deviceId}, behind the password.
func (a *Accounts) DeleteDevice(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := decodeOptional(r, &body); err != nil {
		return httputil.Response{}, err
	}
	return a.deleteDevices(r, dev, body.Auth, []string{httputil.Vars(r)["deviceID"]})
}

// DeleteDevices is POST /delete_devices, behind the password.
func (a *Accounts) DeleteDevices(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		Devices []string        `json:"devices"`
		Auth    json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.Devices == nil {
		return httputil.Response{}, matrixerr.MissingParam("devices is required")
	}
	return a.deleteDevices(r, dev, body.Auth, body.Devices)
}

func (a *Accounts) deleteDevices(r *http.Request, dev *uapi.Device, auth json.RawMessage, deviceIDs []string) (httputil.Response, error) {
	if challenge, err := a.requirePassword(r, dev, auth); challenge != nil || err != nil {
		return deref(challenge), err
	}
	if _, err := a.UserAPI.PerformDeviceDeletion(r.Context(), &uapi.PerformDeviceDeletionRequest{UserID: dev.UserID, DeviceIDs: deviceIDs}); err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// ChangePassword is POST /account/password, behind the current password. Other devices are
// logged out unless logout_devices is false.
func (a *Accounts) ChangePassword(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		NewPassword   string          `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
		Auth          json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.NewPassword == "" {
		return httputil.Response{}, matrixerr.MissingParam("new_password is required")
	}
	if err := checkPassword(body.NewPassword); err != nil {
		return httputil.Response{}, err
	}
	if challenge, err := a.requirePassword(r, dev, body.Auth); challenge != nil || err != nil {
		return deref(challenge), err
	}
	_, err := a.UserAPI.PerformPasswordUpdate(r.Context(), &uapi.PerformPasswordUpdateRequest{Localpart: localpartOf(dev.UserID), Password: body.NewPassword,
		KeepDevices: body.LogoutDevices != nil && !*body.LogoutDevices, ExceptDeviceID: dev.DeviceID})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// DeactivateAccount is POST /account/deactivate, behind the password: the account loses
// its password and devices for good, and with erase its events are served redacted from
// then on to the users and servers who could not see them when they were sent (see
// docs/auth.md). This server keeps no third-party identifiers, so it unbinds nothing from
// identity servers (id_server_unbind_result no-support).
func (a *Accounts) DeactivateAccount(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		Auth  json.RawMessage `json:"auth"`
		Erase bool            `json:"erase"`
	}
	if err := decodeOptional(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if challenge, err := a.requirePassword(r, dev, body.Auth); challenge != nil || err != nil {
		return deref(challenge), err
	}
	_, err := a.UserAPI.PerformAccountDeactivation(r.Context(), &uapi.PerformAccountDeactivationRequest{Localpart: localpartOf(dev.UserID), Erase: body.Erase})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"id_server_unbind_result": "no-support"}), nil
}

func deref(r *httputil.Response) httputil.Response {
	if r == nil {
		return httputil.Response{}
	}
	return *r
}
