// Package clientapi is the writer behind /_matrix/client: accounts and rooms. Room events
// go to the roomserver's input log through roomserver/api; accounts, profiles and account
// data go to the userapi.
package clientapi

import (
	"crypto/ed25519"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/clientapi/routing"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
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
}

// ClientAPI is the client API's route table.
type ClientAPI struct {
	accounts *routing.Accounts
	rooms    *routing.Rooms
}

// New builds the client API.
func New(d Deps) *ClientAPI {
	rooms := &routing.Rooms{Cfg: d.Cfg, ServerName: d.ServerName, KeyID: d.KeyID, PrivateKey: d.PrivateKey, RSAPI: d.RSAPI, UserAPI: d.UserAPI}
	accounts := &routing.Accounts{Cfg: d.Cfg, ServerName: string(d.ServerName), UserAPI: d.UserAPI, ProfileChanged: rooms.ReflectProfile}
	return &ClientAPI{accounts: accounts, rooms: rooms}
}

// Routes lists every client API endpoint with its absolute path.
func (c *ClientAPI) Routes() []httputil.Route {
	return append(c.accounts.Routes(), c.rooms.Routes()...)
}
