package routing

import (
	"context"
	"errors"
	"net/http"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/outbound"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Values of id_server_unbind_result.
const (
	unbindSuccess   = "success"
	unbindNoSupport = "no-support"
)

// threePIDRoutes are the 3PID endpoints (spec: "Adding Account Administrative Contact
// Information"), before the client path prefixes are added.
func (a *Accounts) threePIDRoutes(auth func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc) []httputil.Route {
	post := http.MethodPost
	return []httputil.Route{
		{Name: "threePIDs", Method: http.MethodGet, Path: "/account/3pid", Handler: auth(a.ThreePIDs)},
		{Name: "bindThreePID", Method: post, Path: "/account/3pid/bind", Handler: auth(a.BindThreePID)},
		{Name: "unbindThreePID", Method: post, Path: "/account/3pid/unbind", Handler: auth(a.UnbindThreePID)},
		{Name: "deleteThreePID", Method: post, Path: "/account/3pid/delete", Handler: auth(a.DeleteThreePID)},
	}
}

// unstableThreePIDRoutes are bind and unbind under /_matrix/client/unstable as well.
// NOTSPEC: they were unstable endpoints (MSC2290) before r0.6.0 made them
// /r0/account/3pid/bind and /unbind (https://spec.matrix.org/v1.1/client-server-api/#post_matrixclientv3account3pidbind);
// sytest still uses the unstable paths, which Synapse serves too.
func unstableThreePIDRoutes(routes []httputil.Route) []httputil.Route {
	var out []httputil.Route
	for _, r := range routes {
		if r.Name == "bindThreePID" || r.Name == "unbindThreePID" {
			r.Path = "/_matrix/client/unstable" + r.Path
			out = append(out, r)
		}
	}
	return out
}

// identityError turns a failed identity server request into the client's error: never the
// identity server's own text, which could hold anything.
func identityError(r *http.Request, err error) error {
	httputil.Logger(r).WithError(err).Warn("identity server request failed")
	var se *identity.StatusError
	switch {
	case errors.Is(err, outbound.ErrDenied):
		return matrixerr.Forbidden("the identity server's address is not allowed")
	case errors.As(err, &se) && se.Code/100 == 4:
		return matrixerr.BadRequest("the identity server refused the request")
	default:
		return matrixerr.BadGateway("the identity server could not be reached")
	}
}

// identityServers is a.IdentityServers, or M_SERVER_NOT_TRUSTED when there is none.
func (a *Accounts) identityServers() (*identity.Client, error) {
	if a.IdentityServers == nil {
		return nil, matrixerr.ServerNotTrusted("this server talks to no identity server")
	}
	return a.IdentityServers, nil
}

// ThreePIDs is GET /account/3pid: the 3PIDs this server knows of the user.
func (a *Accounts) ThreePIDs(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	res, err := a.UserAPI.QueryThreePIDs(r.Context(), &uapi.QueryThreePIDsRequest{UserID: dev.UserID})
	if err != nil {
		return httputil.Response{}, err
	}
	type threePID struct {
		Medium      string `json:"medium"`
		Address     string `json:"address"`
		ValidatedAt int64  `json:"validated_at"`
		AddedAt     int64  `json:"added_at"`
	}
	out := make([]threePID, 0, len(res.ThreePIDs))
	for _, tp := range res.ThreePIDs {
		out = append(out, threePID{Medium: tp.Medium, Address: tp.Address, ValidatedAt: tp.AddedAt, AddedAt: tp.AddedAt})
	}
	return httputil.OK(map[string]any{"threepids": out}), nil
}

// BindThreePID is POST /account/3pid/bind: the identity server binds the 3PID it validated
// in the session to the user, and this server records the 3PID with the identity server,
// so that unbinding and deactivation can undo the binding there.
func (a *Accounts) BindThreePID(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		ClientSecret  string `json:"client_secret"`
		IDAccessToken string `json:"id_access_token"`
		IDServer      string `json:"id_server"`
		SID           string `json:"sid"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.ClientSecret == "" || body.IDServer == "" || body.SID == "" {
		return httputil.Response{}, matrixerr.MissingParam("client_secret, id_server and sid are required")
	}
	if !identity.ValidServerName(body.IDServer) {
		return httputil.Response{}, matrixerr.InvalidParam("id_server is not a server name")
	}
	ids, err := a.identityServers()
	if err != nil {
		return httputil.Response{}, err
	}
	tp, err := ids.Bind(r.Context(), body.IDServer, body.IDAccessToken, body.SID, body.ClientSecret, dev.UserID)
	if err != nil {
		return httputil.Response{}, identityError(r, err)
	}
	_, err = a.UserAPI.PerformThreePID(r.Context(), &uapi.PerformThreePIDRequest{UserID: dev.UserID,
		ThreePID: uapi.ThreePID{Medium: tp.Medium, Address: tp.Address, IDServer: body.IDServer}})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// unbindBody is the body of /account/3pid/unbind and /account/3pid/delete.
type unbindBody struct {
	Medium   string `json:"medium"`
	Address  string `json:"address"`
	IDServer string `json:"id_server"`
}

func decodeUnbind(r *http.Request) (*unbindBody, error) {
	var body unbindBody
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Medium == "" || body.Address == "" {
		return nil, matrixerr.MissingParam("medium and address are required")
	}
	if body.IDServer != "" && !identity.ValidServerName(body.IDServer) {
		return nil, matrixerr.InvalidParam("id_server is not a server name")
	}
	return &body, nil
}

// unbind removes the user's 3PID from idServer, or, when idServer is "", from the identity
// server it was bound on through this server. It reports no-support when there is no
// identity server to ask; a binding the identity server does not have counts as removed.
func (a *Accounts) unbind(ctx context.Context, userID, idServer string, tp identity.ThreePID) (string, error) {
	if idServer == "" {
		res, err := a.UserAPI.QueryThreePIDs(ctx, &uapi.QueryThreePIDsRequest{UserID: userID})
		if err != nil {
			return "", err
		}
		for _, known := range res.ThreePIDs {
			if known.Medium == tp.Medium && known.Address == tp.Address {
				idServer = known.IDServer
			}
		}
	}
	if idServer == "" || a.IdentityServers == nil {
		return unbindNoSupport, nil
	}
	err := a.IdentityServers.Unbind(ctx, idServer, userID, tp)
	if err != nil && !errors.Is(err, identity.ErrNotBound) {
		return "", err
	}
	return unbindSuccess, nil
}

// UnbindThreePID is POST /account/3pid/unbind: the 3PID is removed from the identity server
// and stays known to this server.
func (a *Accounts) UnbindThreePID(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	body, err := decodeUnbind(r)
	if err != nil {
		return httputil.Response{}, err
	}
	tp := identity.ThreePID{Medium: body.Medium, Address: body.Address}
	result, err := a.unbind(r.Context(), dev.UserID, body.IDServer, tp)
	if err != nil {
		return httputil.Response{}, identityError(r, err)
	}
	if result == unbindSuccess {
		// Still the user's, but no longer bound anywhere through this server.
		_, err = a.UserAPI.PerformThreePID(r.Context(), &uapi.PerformThreePIDRequest{UserID: dev.UserID, ThreePID: uapi.ThreePID{Medium: tp.Medium, Address: tp.Address}})
		if err != nil {
			return httputil.Response{}, err
		}
	}
	return httputil.OK(map[string]string{"id_server_unbind_result": result}), nil
}

// DeleteThreePID is POST /account/3pid/delete: the 3PID is removed from the identity server
// and from this server.
func (a *Accounts) DeleteThreePID(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	body, err := decodeUnbind(r)
	if err != nil {
		return httputil.Response{}, err
	}
	tp := identity.ThreePID{Medium: body.Medium, Address: body.Address}
	result, err := a.unbind(r.Context(), dev.UserID, body.IDServer, tp)
	if err != nil {
		return httputil.Response{}, identityError(r, err)
	}
	_, err = a.UserAPI.PerformThreePID(r.Context(), &uapi.PerformThreePIDRequest{UserID: dev.UserID, ThreePID: uapi.ThreePID{Medium: tp.Medium, Address: tp.Address}, Delete: true})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"id_server_unbind_result": result}), nil
}

// unbindAll removes every 3PID of the user from the identity server it was bound on (or
// idServer when set) and from this server, for deactivation. It reports success only when
// every 3PID was unbound from an identity server.
func (a *Accounts) unbindAll(r *http.Request, userID, idServer string) (string, error) {
	ctx := r.Context()
	res, err := a.UserAPI.QueryThreePIDs(ctx, &uapi.QueryThreePIDsRequest{UserID: userID})
	if err != nil {
		return "", err
	}
	result := unbindSuccess
	for _, known := range res.ThreePIDs {
		server := idServer
		if server == "" {
			server = known.IDServer
		}
		tp := identity.ThreePID{Medium: known.Medium, Address: known.Address}
		one, err := a.unbind(ctx, userID, server, tp)
		if err != nil {
			return "", identityError(r, err)
		}
		if one != unbindSuccess {
			result = one
		}
		_, err = a.UserAPI.PerformThreePID(ctx, &uapi.PerformThreePIDRequest{UserID: userID, ThreePID: uapi.ThreePID{Medium: tp.Medium, Address: tp.Address}, Delete: true})
		if err != nil {
			return "", err
		}
	}
	return result, nil
}
