package routing

import (
	"context"
	"net/http"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Limits on profile fields: they are copied into every member event of the user.
const (
	maxDisplayNameRunes = 256
	maxAvatarURLBytes   = 1000
)

// profile returns a user's profile: a local user's from the userapi, a remote user's from
// their server through the federationapi (M_NOT_FOUND when there is none to ask).
func (a *Accounts) profile(ctx context.Context, r *http.Request) (*uapi.QueryProfileResponse, error) {
	userID := httputil.Vars(r)["userID"]
	uid, err := spec.NewUserID(userID, true)
	if err != nil || string(uid.Domain()) == a.ServerName || a.Federation == nil {
		return a.UserAPI.QueryProfile(ctx, &uapi.QueryProfileRequest{UserID: userID})
	}
	p, err := a.Federation.QueryRemoteProfile(ctx, &fapi.QueryRemoteProfileRequest{UserID: userID})
	if err != nil {
		return nil, err
	}
	return &uapi.QueryProfileResponse{DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}, nil
}

// GetProfile is GET /profile/{userId}.
func (a *Accounts) GetProfile(r *http.Request) (httputil.Response, error) {
	p, err := a.profile(r.Context(), r)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(p), nil
}

// GetDisplayName is GET /profile/{userId}/displayname.
func (a *Accounts) GetDisplayName(r *http.Request) (httputil.Response, error) {
	p, err := a.profile(r.Context(), r)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct {
		DisplayName string `json:"displayname,omitempty"`
	}{p.DisplayName}), nil
}

// GetAvatarURL is GET /profile/{userId}/avatar_url.
func (a *Accounts) GetAvatarURL(r *http.Request) (httputil.Response, error) {
	p, err := a.profile(r.Context(), r)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct {
		AvatarURL string `json:"avatar_url,omitempty"`
	}{p.AvatarURL}), nil
}

// SetDisplayName is PUT /profile/{userId}/displayname.
func (a *Accounts) SetDisplayName(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		DisplayName *string `json:"displayname"`
	}
	set := func(ctx context.Context, localpart, v string) (bool, error) {
		res, err := a.UserAPI.PerformSetDisplayName(ctx, &uapi.PerformSetDisplayNameRequest{Localpart: localpart, DisplayName: v})
		if err != nil {
			return false, err
		}
		return res.Changed, nil
	}
	return a.setProfileField(r, dev, &body, &body.DisplayName, set, func(v string) error {
		if utf8.RuneCountInString(v) > maxDisplayNameRunes {
			return matrixerr.InvalidParam("the display name is too long")
		}
		return nil
	})
}

// SetAvatarURL is PUT /profile/{userId}/avatar_url.
func (a *Accounts) SetAvatarURL(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		AvatarURL *string `json:"avatar_url"`
	}
	set := func(ctx context.Context, localpart, v string) (bool, error) {
		res, err := a.UserAPI.PerformSetAvatarURL(ctx, &uapi.PerformSetAvatarURLRequest{Localpart: localpart, AvatarURL: v})
		if err != nil {
			return false, err
		}
		return res.Changed, nil
	}
	return a.setProfileField(r, dev, &body, &body.AvatarURL, set, func(v string) error {
		if len(v) > maxAvatarURLBytes {
			return matrixerr.InvalidParam("the avatar URL is too long")
		}
		return nil
	})
}

// setProfileFunc stores one profile field of a local user and says whether it changed.
type setProfileFunc func(ctx context.Context, localpart, value string) (bool, error)

// setProfileField decodes body, whose field value points into it, checks the value and
// stores it; when it changed, ProfileChanged carries it into the user's rooms.
func (a *Accounts) setProfileField(r *http.Request, dev *uapi.Device, body any, value **string, set setProfileFunc, check func(string) error) (httputil.Response, error) {
	userID, err := userIDVar(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	if err = httputil.DecodeJSON(r, body); err != nil {
		return httputil.Response{}, err
	}
	if *value == nil {
		return httputil.Response{}, matrixerr.MissingParam("the new value is missing")
	}
	if err = check(**value); err != nil {
		return httputil.Response{}, err
	}
	changed, err := set(r.Context(), localpartOf(userID), **value)
	if err != nil {
		return httputil.Response{}, err
	}
	if changed && a.ProfileChanged != nil {
		if err = a.ProfileChanged(r.Context(), userID); err != nil {
			return httputil.Response{}, err
		}
	}
	return httputil.OK(struct{}{}), nil
}
