package e2e

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
)

// wantUIA fails unless err is a 401 User-Interactive Authentication answer offering the
// password stage, with errcode code ("" for the first challenge).
func wantUIA(t *testing.T, err error, code string) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != http.StatusUnauthorized {
		t.Fatalf("want a 401 authentication challenge, got %v", err)
	}
	got := ""
	if httpErr.RespError != nil {
		got = httpErr.RespError.ErrCode
	}
	if got != code {
		t.Fatalf("challenge errcode %q, want %q", got, code)
	}
}

// AccountSecurity deletes a device and changes the password behind User-Interactive
// Authentication with the password, with a real client.
func AccountSecurity(t *testing.T, baseURL string) {
	ctx := context.Background()
	const name, password = "sec-alice", "password-sec-alice"
	alice := Register(t, baseURL, name)
	login := func(pw string) (*mautrix.Client, error) {
		c := Client(t, baseURL)
		res, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name}, Password: pw})
		if err != nil {
			return nil, err
		}
		c.UserID, c.AccessToken, c.DeviceID = res.UserID, res.AccessToken, res.DeviceID
		return c, nil
	}
	second, err := login(password)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	auth := func(pw string) map[string]any {
		return map[string]any{"auth": map[string]any{"type": "m.login.password", "password": pw,
			"identifier": map[string]string{"type": "m.id.user", "user": name}}}
	}
	deleteURL := alice.BuildClientURL("v3", "devices", second.DeviceID)
	_, err = alice.MakeRequest(ctx, http.MethodDelete, deleteURL, struct{}{}, nil)
	wantUIA(t, err, "")
	_, err = alice.MakeRequest(ctx, http.MethodDelete, deleteURL, auth("wrong password"), nil)
	wantUIA(t, err, "M_FORBIDDEN")
	if _, err = second.Whoami(ctx); err != nil {
		t.Fatalf("the device must live after failed authentication: %v", err)
	}
	if _, err = alice.MakeRequest(ctx, http.MethodDelete, deleteURL, auth(password), nil); err != nil {
		t.Fatalf("delete device: %v", err)
	}
	_, err = second.Whoami(ctx)
	WantErrCode(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// A new password logs the other devices out, keeps this one, and replaces the old one.
	third, err := login(password)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	const newPassword = "a new password for alice"
	change := auth(password)
	change["new_password"] = newPassword
	_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "account", "password"), map[string]string{"new_password": newPassword}, nil)
	wantUIA(t, err, "")
	if _, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "account", "password"), change, nil); err != nil {
		t.Fatalf("change password: %v", err)
	}
	_, err = third.Whoami(ctx)
	WantErrCode(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	if _, err = alice.Whoami(ctx); err != nil {
		t.Fatalf("the device that changed the password must stay logged in: %v", err)
	}
	_, err = login(password)
	WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	if _, err = login(newPassword); err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
}
