// Package routing holds the federationapi's public endpoints: the key server and notary
// under /_matrix/key/v2 (unauthenticated, as the spec says) and /_matrix/federation, every
// endpoint of which but /version requires X-Matrix request authentication (auth.go).
package routing

import (
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/federationapi/storage"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/openid"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// ServerVersion is what /_matrix/federation/v1/version reports.
const ServerVersion = "0.1.0"

// Routing serves the federation and key endpoints.
type Routing struct {
	ServerName spec.ServerName
	Keys       *internal.Keys
	// Verifier checks X-Matrix signatures (the key ring).
	Verifier gomatrixserverlib.JSONVerifier
	Users    uapi.FederationUserAPI
	Metrics  *internal.Metrics
	// Inbound checks received events and writes them to the roomserver.
	Inbound *internal.Inbound
	// Rooms answers the event and state endpoints.
	Rooms rsapi.QueryAPI
	// Directory answers /query/directory and /publicRooms.
	Directory rsapi.DirectoryAPI
	// DB stores /send responses for retried transactions.
	DB storage.Database
	// EDUs takes the EDUs of received transactions.
	EDUs *internal.EDUs
	// Alive hears of every server that sent an authenticated request (nil: nobody does).
	Alive *internal.Alive
	// Now is the clock requests are verified at (time.Now when nil).
	Now func() time.Time
	// Limiter limits each origin's authenticated requests (nil: no limit).
	Limiter *httputil.RateLimiter
	// OpenID checks the tokens of /openid/userinfo, which the clientapi issued.
	OpenID *openid.Tokens
	// Membership exchanges third-party invites into m.room.member invites.
	Membership *internal.Membership
}

// Routes are every federation and key endpoint.
func (rt *Routing) Routes() []httputil.Route {
	return []httputil.Route{
		{Name: "key_server", Method: http.MethodGet, Path: "/_matrix/key/v2/server", Handler: rt.KeyServer},
		// Deprecated form with a key ID, which the answer ignores.
		{Name: "key_server", Method: http.MethodGet, Path: "/_matrix/key/v2/server/{keyID}", Handler: rt.KeyServer},
		{Name: "key_query", Method: http.MethodPost, Path: "/_matrix/key/v2/query", Handler: rt.KeyQuery},
		{Name: "key_query_server", Method: http.MethodGet, Path: "/_matrix/key/v2/query/{serverName}", Handler: rt.KeyQueryServer},
		{Name: "key_query_server", Method: http.MethodGet, Path: "/_matrix/key/v2/query/{serverName}/{keyID}", Handler: rt.KeyQueryServer},
		{Name: "federation_version", Method: http.MethodGet, Path: "/_matrix/federation/v1/version", Handler: rt.Version},
		{Name: "federation_openid_userinfo", Method: http.MethodGet, Path: "/_matrix/federation/v1/openid/userinfo", Handler: rt.OpenIDUserInfo},
		{Name: "federation_query_profile", Method: http.MethodGet, Path: "/_matrix/federation/v1/query/profile", Handler: rt.Authenticated(rt.QueryProfile)},
		{Name: "federation_query_directory", Method: http.MethodGet, Path: "/_matrix/federation/v1/query/directory", Handler: rt.Authenticated(rt.QueryDirectory)},
		{Name: "federation_public_rooms", Method: http.MethodGet, Path: "/_matrix/federation/v1/publicRooms", Handler: rt.Authenticated(rt.PublicRooms)},
		{Name: "federation_public_rooms", Method: http.MethodPost, Path: "/_matrix/federation/v1/publicRooms", Handler: rt.Authenticated(rt.PublicRoomsFiltered)},
		{Name: "federation_3pid_onbind", Method: http.MethodPost, Path: "/_matrix/federation/v1/3pid/onbind", Handler: rt.OnBind},
		{Name: "federation_exchange_third_party_invite", Method: http.MethodPut, Path: "/_matrix/federation/v1/exchange_third_party_invite/{roomID}", Handler: rt.Authenticated(rt.ExchangeThirdPartyInvite)},
		{Name: "federation_send", Method: http.MethodPut, Path: "/_matrix/federation/v1/send/{txnID}", Handler: rt.Authenticated(rt.Send)},
		{Name: "federation_event", Method: http.MethodGet, Path: "/_matrix/federation/v1/event/{eventID}", Handler: rt.Authenticated(rt.GetEvent)},
		{Name: "federation_state", Method: http.MethodGet, Path: "/_matrix/federation/v1/state/{roomID}", Handler: rt.Authenticated(rt.State)},
		{Name: "federation_state_ids", Method: http.MethodGet, Path: "/_matrix/federation/v1/state_ids/{roomID}", Handler: rt.Authenticated(rt.StateIDs)},
		{Name: "federation_get_missing_events", Method: http.MethodPost, Path: "/_matrix/federation/v1/get_missing_events/{roomID}", Handler: rt.Authenticated(rt.GetMissingEvents)},
		{Name: "federation_make_join", Method: http.MethodGet, Path: "/_matrix/federation/v1/make_join/{roomID}/{userID}", Handler: rt.Authenticated(rt.MakeJoin)},
		{Name: "federation_send_join", Method: http.MethodPut, Path: "/_matrix/federation/v2/send_join/{roomID}/{eventID}", Handler: rt.Authenticated(rt.SendJoin)},
		{Name: "federation_send_join_v1", Method: http.MethodPut, Path: "/_matrix/federation/v1/send_join/{roomID}/{eventID}", Handler: rt.Authenticated(rt.SendJoinV1)},
		{Name: "federation_make_leave", Method: http.MethodGet, Path: "/_matrix/federation/v1/make_leave/{roomID}/{userID}", Handler: rt.Authenticated(rt.MakeLeave)},
		{Name: "federation_send_leave", Method: http.MethodPut, Path: "/_matrix/federation/v2/send_leave/{roomID}/{eventID}", Handler: rt.Authenticated(rt.SendLeave)},
		{Name: "federation_send_leave_v1", Method: http.MethodPut, Path: "/_matrix/federation/v1/send_leave/{roomID}/{eventID}", Handler: rt.Authenticated(rt.SendLeaveV1)},
		{Name: "federation_make_knock", Method: http.MethodGet, Path: "/_matrix/federation/v1/make_knock/{roomID}/{userID}", Handler: rt.Authenticated(rt.MakeKnock)},
		{Name: "federation_send_knock", Method: http.MethodPut, Path: "/_matrix/federation/v1/send_knock/{roomID}/{eventID}", Handler: rt.Authenticated(rt.SendKnock)},
		{Name: "federation_hierarchy", Method: http.MethodGet, Path: "/_matrix/federation/v1/hierarchy/{roomID}", Handler: rt.Authenticated(rt.Hierarchy)},
		{Name: "federation_invite", Method: http.MethodPut, Path: "/_matrix/federation/v2/invite/{roomID}/{eventID}", Handler: rt.Authenticated(rt.InviteV2)},
		{Name: "federation_invite_v1", Method: http.MethodPut, Path: "/_matrix/federation/v1/invite/{roomID}/{eventID}", Handler: rt.Authenticated(rt.InviteV1)},
		{Name: "federation_event_auth", Method: http.MethodGet, Path: "/_matrix/federation/v1/event_auth/{roomID}/{eventID}", Handler: rt.Authenticated(rt.EventAuth)},
		{Name: "federation_backfill", Method: http.MethodGet, Path: "/_matrix/federation/v1/backfill/{roomID}", Handler: rt.Authenticated(rt.Backfill)},
		{Name: "federation_user_keys_query", Method: http.MethodPost, Path: "/_matrix/federation/v1/user/keys/query", Handler: rt.Authenticated(rt.UserKeysQuery)},
		{Name: "federation_user_keys_claim", Method: http.MethodPost, Path: "/_matrix/federation/v1/user/keys/claim", Handler: rt.Authenticated(rt.UserKeysClaim)},
		{Name: "federation_user_devices", Method: http.MethodGet, Path: "/_matrix/federation/v1/user/devices/{userID}", Handler: rt.Authenticated(rt.UserDevices)},
	}
}

// Version is GET /_matrix/federation/v1/version. The spec does not require signing it, so
// anyone (federation testers too) may ask.
func (rt *Routing) Version(*http.Request) (httputil.Response, error) {
	type server struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	return httputil.OK(struct {
		Server server `json:"server"`
	}{server{Name: "Dendrite", Version: ServerVersion}}), nil
}

// OpenIDUserInfo is GET /_matrix/federation/v1/openid/userinfo: the user ID of an OpenID token
// this server issued and that has not expired, 401 M_UNKNOWN_TOKEN for any other or none.
// Not X-Matrix authenticated: the token is the credential, presented by any third party.
func (rt *Routing) OpenIDUserInfo(r *http.Request) (httputil.Response, error) {
	now := time.Now
	if rt.Now != nil {
		now = rt.Now
	}
	userID, ok := rt.OpenID.Verify(r.URL.Query().Get("access_token"), now())
	if !ok {
		return httputil.Response{}, matrixerr.UnknownToken("access token unknown or expired")
	}
	return httputil.OK(map[string]string{"sub": userID}), nil
}
