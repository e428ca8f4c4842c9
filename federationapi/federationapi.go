// Package federationapi is the writer for server-server traffic: it publishes our signing
// keys (/_matrix/key/v2/server), acts as a notary for other servers' keys
// (/_matrix/key/v2/query), keeps the key ring that fetches and caches other servers' keys,
// and serves /_matrix/federation with X-Matrix request authentication. See api/ for what
// other components use (the key ring).
package federationapi

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/federationapi/routing"
	"github.com/matrix-org/dendrite/federationapi/storage/sql"
	fsapi "github.com/matrix-org/dendrite/federationsender/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/openid"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Deps is what the federationapi is built from. Logger and Registerer may be nil.
type Deps struct {
	Cfg        *config.FederationAPI
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	DB         *sqlutil.DB
	// Client makes outbound federation requests (internal/fedclient in production).
	Client gomatrixserverlib.KeyClient
	// Federation fetches what received events lack (missing events, state) from their
	// origin; internal/fedclient in production.
	Federation fclient.FederationClient
	// Roomserver takes received events and answers the event and state endpoints.
	Roomserver rsapi.FederationRoomserverAPI
	Users      uapi.FederationUserAPI
	// EDU, Receipts and Presence take the EDUs of received transactions; Presence is nil
	// when presence from other servers is not accepted.
	EDU      eduapi.InputAPI
	Receipts receiptapi.InputAPI
	Presence presenceapi.InputAPI
	// DeviceLists takes other servers' device list updates (the userapi's input topic).
	DeviceLists uapi.DeviceListInputAPI
	// Sender, when set, is told of servers that sent us requests (they are up).
	Sender fsapi.SenderAPI
	Logger *logrus.Entry
	// IdentityServers checks third-party invites' signatures with their identity servers
	// (nil: third-party invites are refused).
	IdentityServers *identity.Client
	// Registerer takes the component's metrics.
	Registerer prometheus.Registerer
	// Now is the clock (time.Now when nil); tests move it.
	Now func() time.Time
}

// FederationAPI is the federationapi component.
type FederationAPI struct {
	keys       *internal.Keys
	membership *internal.Membership
	backfill   *internal.Backfiller
	routing    *routing.Routing
}

// New migrates the federationapi's storage and builds its key ring and routes.
func New(ctx context.Context, d Deps) (*FederationAPI, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	logger := d.Logger
	if logger == nil {
		logger = logrus.NewEntry(logrus.StandardLogger())
	}
	old, err := oldVerifyKeys(d.Cfg.OldVerifyKeys)
	if err != nil {
		return nil, err
	}
	notaries, err := notaryFetchers(d.Cfg.KeyPerspectives, d.Client)
	if err != nil {
		return nil, err
	}
	metrics := internal.NewMetrics(d.Registerer)
	now := d.Now
	if now == nil {
		now = time.Now
	}
	keys := &internal.Keys{
		ServerName: d.ServerName, KeyID: d.KeyID, PrivateKey: d.PrivateKey, OldVerifyKeys: old,
		ValidityPeriod: time.Duration(d.Cfg.KeyValidityPeriod), DB: db, Client: d.Client, Notaries: notaries,
		Logger: logger, Metrics: metrics, Now: d.Now,
	}
	inbound := &internal.Inbound{ServerName: d.ServerName, Roomserver: d.Roomserver, Verifier: keys.Ring(), Client: d.Federation, Logger: logger,
		Accounts: d.Users}
	membership := &internal.Membership{
		ServerName: d.ServerName, KeyID: d.KeyID, PrivateKey: d.PrivateKey, Client: d.Federation, KeyRing: api.NewKeyRing(keys),
		Inbound: inbound, Logger: logger, IdentityServers: d.IdentityServers,
	}
	rt := &routing.Routing{
		ServerName: d.ServerName, Keys: keys, Verifier: keys.Ring(), Users: d.Users, Metrics: metrics, Now: d.Now,
		Inbound: inbound, Rooms: d.Roomserver, Directory: d.Roomserver, DB: db,
		EDUs: &internal.EDUs{ServerName: d.ServerName, EDU: d.EDU, Receipts: d.Receipts, Presence: d.Presence, DeviceLists: d.DeviceLists, Rooms: d.Roomserver,
			Logger: logger, Now: now},
		Alive:      &internal.Alive{Sender: d.Sender, Logger: logger},
		OpenID:     openid.New(d.PrivateKey),
		Membership: membership,
	}
	if rl := d.Cfg.RateLimiting; rl.Enabled {
		rt.Limiter = httputil.NewRateLimiter(rl.PerSecond, rl.Burst, rl.ExemptServers)
	}
	return &FederationAPI{keys: keys, membership: membership, backfill: &internal.Backfiller{Inbound: inbound}, routing: rt}, nil
}

// Routes are the public /_matrix/federation and /_matrix/key endpoints.
func (f *FederationAPI) Routes() []httputil.Route {
	return f.routing.Routes()
}

// API is the federationapi's internal API: the key ring's lookups, the membership
// changes that involve other servers and backfill.
func (f *FederationAPI) API() api.ServerAPI {
	return serverAPI{f.keys, f.membership, f.backfill}
}

type serverAPI struct {
	*internal.Keys
	*internal.Membership
	*internal.Backfiller
}

// KeyRing verifies other servers' signatures with keys from the cache, the servers
// themselves or the notaries, caching what it fetched.
func (f *FederationAPI) KeyRing() gomatrixserverlib.JSONVerifier {
	return f.keys.Ring()
}

func oldVerifyKeys(cfg []config.OldVerifyKey) (map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey, error) {
	out := map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	for _, k := range cfg {
		pub, err := config.DecodePublicKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("old verify key %s: %w", k.KeyID, err)
		}
		out[gomatrixserverlib.KeyID(k.KeyID)] = gomatrixserverlib.OldVerifyKey{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(pub)}, ExpiredTS: spec.Timestamp(k.ExpiredTS),
		}
	}
	return out, nil
}

func notaryFetchers(cfg []config.KeyPerspective, client gomatrixserverlib.KeyClient) ([]gomatrixserverlib.KeyFetcher, error) {
	var out []gomatrixserverlib.KeyFetcher
	for _, p := range cfg {
		keys := map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
		for _, k := range p.Keys {
			pub, err := config.DecodePublicKey(k.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("key perspective %s key %s: %w", p.ServerName, k.KeyID, err)
			}
			keys[gomatrixserverlib.KeyID(k.KeyID)] = pub
		}
		out = append(out, &gomatrixserverlib.PerspectiveKeyFetcher{
			PerspectiveServerName: spec.ServerName(p.ServerName), PerspectiveServerKeys: keys, Client: client,
		})
	}
	return out, nil
}
