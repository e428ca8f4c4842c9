package routing

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// QueryProfile is GET /_matrix/federation/v1/query/profile?user_id=...[&field=...]: a local
// user's display name and avatar URL, or only the field asked for.
func (rt *Routing) QueryProfile(r *http.Request, _ *fclient.FederationRequest) (httputil.Response, error) {
	q := r.URL.Query()
	userID := q.Get("user_id")
	if userID == "" {
		return httputil.Response{}, matrixerr.MissingParam("user_id is required")
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return httputil.Response{}, matrixerr.InvalidParam("user_id is not a valid user ID")
	}
	if uid.Domain() != rt.ServerName {
		return httputil.Response{}, matrixerr.InvalidParam("user_id is not a user of this server")
	}
	p, err := rt.Users.QueryProfile(r.Context(), &uapi.QueryProfileRequest{UserID: userID})
	if err != nil {
		return httputil.Response{}, err
	}
	switch field := q.Get("field"); field {
	case "":
		return httputil.OK(p), nil
	case "displayname":
		return httputil.OK(uapi.QueryProfileResponse{DisplayName: p.DisplayName}), nil
	case "avatar_url":
		return httputil.OK(uapi.QueryProfileResponse{AvatarURL: p.AvatarURL}), nil
	default:
		// Other fields (m.tz, custom keys) are not stored: an empty answer, as the spec allows
		// servers to omit fields.
		return httputil.OK(struct{}{}), nil
	}
}
