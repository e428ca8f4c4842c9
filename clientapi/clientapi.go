// Package clientapi is the writer behind /_matrix/client: accounts, rooms and ephemeral
// data. Room events go to the roomserver's input log through roomserver/api; typing,
// send-to-device, receipts and presence to the EDU servers' input logs; accounts, profiles,
// account data and end-to-end encryption keys to the userapi.
package clientapi

import (
	"crypto/ed25519"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	asapi "github.com/matrix-org/dendrite/appservice/api"
	"github.com/matrix-org/dendrite/clientapi/routing"
	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/openid"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	peekapi "github.com/matrix-org/dendrite/syncapi/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Deps is what the client API is built from.
type Deps struct {
	Cfg        *config.ClientAPI
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	RSAPI      rsapi.ClientRoomserverAPI
	UserAPI    uapi.ClientUserAPI
	// Federation joins, invites and leaves through other servers; nil makes rooms of
	// other servers unreachable (404).
	Federation fapi.ClientFederationAPI
	EDU        eduapi.InputAPI
	Receipts   receiptapi.InputAPI
	// Presence and PresenceQuery are nil when presence is off.
	Presence      presenceapi.InputAPI
	PresenceQuery presenceapi.QueryAPI
	// AppServices are the registered application services (nil: none).
	AppServices *config.AppServiceAPI
	// AppServiceQueries is the appservice component's API (nil: no queries to services).
	AppServiceQueries asapi.QueryAPI
	// IdentityServers is the client of the identity servers clients name (3PID binding,
	// third-party invites); nil refuses those requests.
	IdentityServers *identity.Client
	// Placement spreads the rooms created here evenly over the roomserver's partitions
	// (nil: wherever their random IDs hash).
	Placement *rsapi.Placement
	// Peeks is the sync API's internal API, which /leave ends a device's peek through
	// (nil: /leave leaves peeks alone).
	Peeks peekapi.PeekAPI
}

// ClientAPI is the client API's route table.
type ClientAPI struct {
	accounts  *routing.Accounts
	rooms     *routing.Rooms
	ephemeral *routing.Ephemeral
	keys      *routing.Keys
}

// New builds the client API.
func New(d Deps) *ClientAPI {
	if d.AppServices == nil {
		d.AppServices = &config.AppServiceAPI{}
	}
	rooms := &routing.Rooms{Cfg: d.Cfg, ServerName: d.ServerName, KeyID: d.KeyID, PrivateKey: d.PrivateKey, RSAPI: d.RSAPI, UserAPI: d.UserAPI, Federation: d.Federation,
		AppServices: d.AppServices, AppServiceQueries: d.AppServiceQueries, IdentityServers: d.IdentityServers,
		Placement: d.Placement, Peeks: d.Peeks}
	accounts := &routing.Accounts{Cfg: d.Cfg, ServerName: string(d.ServerName), UserAPI: d.UserAPI, ProfileChanged: rooms.ReflectProfile, AppServices: d.AppServices,
		OpenID: openid.New(d.PrivateKey), Federation: d.Federation, IdentityServers: d.IdentityServers}
	ephemeral := &routing.Ephemeral{Rooms: rooms, EDU: d.EDU, Receipts: d.Receipts, Presence: d.Presence, PresenceQuery: d.PresenceQuery}
	return &ClientAPI{accounts: accounts, rooms: rooms, ephemeral: ephemeral, keys: &routing.Keys{ServerName: string(d.ServerName), UserAPI: d.UserAPI, Accounts: accounts, Federation: d.Federation}}
}

// Routes lists every client API endpoint with its absolute path.
func (c *ClientAPI) Routes() []httputil.Route {
	return slices.Concat(c.accounts.Routes(), c.rooms.Routes(), c.ephemeral.Routes(), c.keys.Routes())
}
