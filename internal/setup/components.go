package setup

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/appservice"
	asapi "github.com/matrix-org/dendrite/appservice/api"
	asinthttp "github.com/matrix-org/dendrite/appservice/inthttp"
	"github.com/matrix-org/dendrite/clientapi"
	"github.com/matrix-org/dendrite/clientapi/routing"
	"github.com/matrix-org/dendrite/eduserver"
	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	eduinthttp "github.com/matrix-org/dendrite/eduserver/inthttp"
	"github.com/matrix-org/dendrite/federationapi"
	fapi "github.com/matrix-org/dendrite/federationapi/api"
	finthttp "github.com/matrix-org/dendrite/federationapi/inthttp"
	"github.com/matrix-org/dendrite/federationsender"
	fsapi "github.com/matrix-org/dendrite/federationsender/api"
	fsinthttp "github.com/matrix-org/dendrite/federationsender/inthttp"
	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/fedclient"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/identity"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/outbound"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/mediaapi"
	"github.com/matrix-org/dendrite/presenceserver"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	presenceinthttp "github.com/matrix-org/dendrite/presenceserver/inthttp"
	"github.com/matrix-org/dendrite/pushserver"
	pushapi "github.com/matrix-org/dendrite/pushserver/api"
	pushinthttp "github.com/matrix-org/dendrite/pushserver/inthttp"
	"github.com/matrix-org/dendrite/receiptserver"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	receiptinthttp "github.com/matrix-org/dendrite/receiptserver/inthttp"
	"github.com/matrix-org/dendrite/roomserver"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	rsinthttp "github.com/matrix-org/dendrite/roomserver/inthttp"
	"github.com/matrix-org/dendrite/searchapi"
	"github.com/matrix-org/dendrite/syncapi"
	peekapi "github.com/matrix-org/dendrite/syncapi/api"
	synccons "github.com/matrix-org/dendrite/syncapi/consumer"
	syncinthttp "github.com/matrix-org/dendrite/syncapi/inthttp"
	"github.com/matrix-org/dendrite/userapi"
	uapi "github.com/matrix-org/dendrite/userapi/api"
	uinthttp "github.com/matrix-org/dendrite/userapi/inthttp"
)

// component is one row of the wiring table that drives both deployments. The monolith
// builds every row in table order in one env, each row's provided API becoming the next
// rows' peer; a polylith process builds one row, its peers being inthttp clients.
type component struct {
	name string
	// build constructs the component from env (the same constructor in both modes).
	build func(ctx context.Context, e *env) (*built, error)
	// listen is where a polylith process of this component serves its internal API, health
	// and metrics, and its public client routes ("" for none).
	listen func(c *config.Dendrite) (internal, public string)
}

// components is the wiring table, in dependency order.
var components = []component{
	{name: "roomserver", build: buildRoomserver, listen: func(c *config.Dendrite) (string, string) {
		return c.RoomServer.InternalAPI.Listen, ""
	}},
	{name: "userapi", build: buildUserAPI, listen: func(c *config.Dendrite) (string, string) {
		return c.UserAPI.InternalAPI.Listen, ""
	}},
	{name: "eduserver", build: buildEDUServer, listen: func(c *config.Dendrite) (string, string) {
		return c.EDUServer.InternalAPI.Listen, ""
	}},
	{name: "receiptserver", build: buildReceiptServer, listen: func(c *config.Dendrite) (string, string) {
		return c.ReceiptServer.InternalAPI.Listen, ""
	}},
	{name: "presenceserver", build: buildPresenceServer, listen: func(c *config.Dendrite) (string, string) {
		return c.PresenceServer.InternalAPI.Listen, ""
	}},
	{name: "federationsender", build: buildFederationSender, listen: func(c *config.Dendrite) (string, string) {
		return c.FederationSender.InternalAPI.Listen, ""
	}},
	{name: "appservice", build: buildAppService, listen: func(c *config.Dendrite) (string, string) {
		return c.AppServiceAPI.InternalAPI.Listen, ""
	}},
	{name: "federationapi", build: buildFederationAPI, listen: func(c *config.Dendrite) (string, string) {
		return c.FederationAPI.InternalAPI.Listen, c.FederationAPI.Listen
	}},
	{name: "mediaapi", build: buildMediaAPI, listen: func(c *config.Dendrite) (string, string) {
		return c.MediaAPI.InternalAPI.Listen, c.MediaAPI.Listen
	}},
	{name: "searchapi", build: buildSearchAPI, listen: func(c *config.Dendrite) (string, string) {
		return c.SearchAPI.InternalAPI.Listen, c.SearchAPI.Listen
	}},
	{name: "pushserver", build: buildPushServer, listen: func(c *config.Dendrite) (string, string) {
		return c.PushServer.InternalAPI.Listen, c.PushServer.Listen
	}},
	{name: "syncapi", build: buildSyncAPI, listen: func(c *config.Dendrite) (string, string) {
		return c.SyncAPI.InternalAPI.Listen, c.SyncAPI.Listen
	}},
	{name: "clientapi", build: buildClientAPI, listen: func(c *config.Dendrite) (string, string) {
		return c.ClientAPI.InternalAPI.Listen, c.ClientAPI.Listen
	}},
}

func lookup(name string) (component, bool) {
	for _, c := range components {
		if c.name == name {
			return c, true
		}
	}
	return component{}, false
}

// built is a constructed component: what its process serves and runs, and the API it
// provides to the components after it in the monolith.
type built struct {
	// routes are public client API routes.
	routes []httputil.Route
	// fedRoutes are public federation and key routes (no client rate limits, their own
	// body limit).
	fedRoutes []httputil.Route
	// mediaRoutes are public client routes whose bodies are files: the client rate limits,
	// with media_api.max_file_size_bytes as their body limit.
	mediaRoutes []httputil.Route
	// serve registers the internal API on a router (polylith); nil when there is none.
	serve func(router *mux.Router, opts ihttp.ServerOptions)
	// run consumes until ctx ends; nil when there is nothing to run.
	run func(ctx context.Context) error
	// provides are the peer APIs this component implements.
	roomserver rsapi.ServerAPI
	users      uapi.ClientUserAPI
	presence   presenceapi.ServerAPI
	keys       fapi.ServerAPI
	sender     fsapi.SenderAPI
	// appServices is the appservice component's API.
	appServices asapi.QueryAPI
	// edu is the eduserver's API: the replay of OutputSendToDeviceEvent and the writers'
	// wait for send-to-device requests.
	edu eduapi.ServerAPI
	// receipts is the receiptserver's replay of OutputReceiptEvent and its wait for taken
	// receipts.
	receipts receiptapi.ServerAPI
	// push is the pushserver's replay of OutputNotificationData.
	push pushapi.ReplayAPI
	// peeks is the sync API's internal API.
	peeks peekapi.PeekAPI
}

// env is what components are built from: the config, the process's shared resources and
// the peers' APIs (direct implementations in the monolith, inthttp clients in the polylith).
type env struct {
	cfg    *config.Dendrite
	logger *logrus.Logger
	// registry is where components register their metrics.
	registry *prometheus.Registry
	log      eventlog.Log
	// logMetrics are the event log's metrics, shared by the consumers built on it.
	logMetrics *eventlog.Metrics
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey
	serverName spec.ServerName
	// shard is the roomserver shard this process runs (polylith).
	shard int
	// dbs are every database opened, closed by whoever owns env.
	dbs []*sqlutil.DB

	roomserver rsapi.ServerAPI
	users      uapi.ClientUserAPI
	presence   presenceapi.ServerAPI
	// edu replays OutputSendToDeviceEvent records a wiped log lost (syncapi, federationsender,
	// appservice) and tells writers that a send-to-device request was taken (clientapi,
	// federationapi).
	edu eduapi.ServerAPI
	// receipts replays OutputReceiptEvent records a wiped log lost (syncapi,
	// federationsender, pushserver, appservice) and tells writers that a receipt was taken
	// (clientapi).
	receipts receiptapi.ServerAPI
	// push replays OutputNotificationData records a wiped log lost (syncapi).
	push pushapi.ReplayAPI
	// keys is the federationapi's internal API: the key ring (for components that verify
	// signatures) and membership changes through other servers (clientapi).
	keys fapi.ServerAPI
	// sender is the federationsender (for the federationapi: servers seen alive).
	sender fsapi.SenderAPI
	// appServices asks application services about their users and aliases (clientapi).
	appServices asapi.QueryAPI
	// peeks ends devices' peeks, which the sync API keeps (clientapi's /leave).
	peeks peekapi.PeekAPI
	// fedClient is the process's outbound federation client, made on first use.
	fedClient *fedclient.Client
	// outbound is global.deny_networks: what outbound connections to addresses others
	// choose (federation; later media, URL previews, push gateways) must not reach.
	outbound *outbound.Policy
}

func newEnv(cfg *config.Dendrite, logger *logrus.Logger) (*env, error) {
	deny, err := cfg.OutboundPolicy()
	if err != nil {
		return nil, err
	}
	keyID, key, err := config.LoadOrGenerateKey(cfg.SigningKeyPath())
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	return &env{cfg: cfg, logger: logger, registry: prometheus.NewRegistry(), keyID: keyID, key: key,
		serverName: spec.ServerName(cfg.Global.ServerName), outbound: deny}, nil
}

// open opens a component's database (its own, else the global one, else SQLite in the data
// directory) and keeps it for closeDBs.
func (e *env) open(component string, own config.DatabaseOptions) (*sqlutil.DB, error) {
	db, err := sqlutil.Open(e.cfg.DatabaseFor(component, own))
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", component, err)
	}
	if n := e.cfg.MaxOpenConnsFor(own); n > 0 {
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
	}
	e.dbs = append(e.dbs, db)
	return db, nil
}

func (e *env) topic(name string) string {
	return e.cfg.Global.Log.TopicPrefix + name
}

func (e *env) component(name string) *logrus.Entry {
	return e.logger.WithField("component", name)
}

// ready reports whether the event log serves (the brokers answer, on Kafka; no consumer is
// stopped past the end of its partition) and the databases answer.
func (e *env) ready(ctx context.Context) error {
	if err := e.log.Ready(ctx); err != nil {
		return err
	}
	for _, db := range e.dbs {
		if err := db.PingContext(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) closeDBs() {
	for _, db := range e.dbs {
		if err := db.Close(); err != nil {
			e.logger.WithError(err).Warn("closing database failed")
		}
	}
	e.dbs = nil
}

func buildRoomserver(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("roomserver", e.cfg.RoomServer.Database)
	if err != nil {
		return nil, err
	}
	rs, err := roomserver.New(ctx, roomserver.Deps{
		Cfg: &e.cfg.RoomServer, ServerName: e.serverName, KeyID: e.keyID, PrivateKey: e.key, DB: db, Log: e.log,
		InputTopic: e.topic(rsapi.TopicInputRoomEvent), OutputTopic: e.topic(rsapi.TopicOutputRoomEvent), Shard: e.shard,
		Logger: e.component("roomserver").WithField("shard", e.shard), Registerer: e.registry, LogMetrics: e.logMetrics,
		CacheBudget: caching.Budget(e.cfg.Global.Cache.MaxBytes),
	})
	if err != nil {
		return nil, err
	}
	return &built{
		serve:      func(r *mux.Router, opts ihttp.ServerOptions) { rsinthttp.Register(r, rs.API(), opts) },
		run:        rs.Run,
		roomserver: rs.API(),
	}, nil
}

func buildUserAPI(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("userapi", e.cfg.UserAPI.Database)
	if err != nil {
		return nil, err
	}
	ua, err := userapi.New(ctx, userapi.Deps{
		Cfg: &e.cfg.UserAPI, ServerName: string(e.serverName), DB: db, Log: e.log, ClientDataTopic: e.topic(uapi.TopicOutputClientData),
		KeyChangeTopic: e.topic(uapi.TopicOutputKeyChangeEvent), DeviceListTopic: e.topic(uapi.TopicInputDeviceListUpdate), LogMetrics: e.logMetrics,
		AppServices: &e.cfg.AppServiceAPI, Remote: &deviceFetcher{c: e.federationClient(), origin: e.serverName},
		Logger: e.component("userapi"), Registerer: e.registry,
	})
	if err != nil {
		return nil, err
	}
	return &built{
		serve: func(r *mux.Router, opts ihttp.ServerOptions) { uinthttp.Register(r, ua.API(), opts) },
		run:   ua.Run,
		users: ua.API(),
	}, nil
}

// deviceFetcher asks other servers for their users' device lists for the userapi's cache.
type deviceFetcher struct {
	c      *fedclient.Client
	origin spec.ServerName
}

// FetchUserDevices implements uapi.RemoteDeviceFetcher.
func (f *deviceFetcher) FetchUserDevices(ctx context.Context, userID string) (*uapi.QueryDeviceListResponse, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() == f.origin {
		return nil, fmt.Errorf("not a user of another server: %q", userID)
	}
	var res uapi.QueryDeviceListResponse
	if err = f.c.UserDevices(ctx, f.origin, uid.Domain(), userID, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func buildSyncAPI(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("syncapi", e.cfg.SyncAPI.Database)
	if err != nil {
		return nil, err
	}
	s, err := syncapi.New(ctx, syncapi.Deps{
		Cfg: &e.cfg.SyncAPI, ServerName: string(e.serverName), DB: db, Log: e.log, LogMetrics: e.logMetrics,
		OutputRoomEventTopic: e.topic(rsapi.TopicOutputRoomEvent), ClientDataTopic: e.topic(uapi.TopicOutputClientData),
		KeyChangeTopic: e.topic(uapi.TopicOutputKeyChangeEvent),
		EphemeralTopics: synccons.EphemeralTopics{Typing: e.topic(eduapi.TopicOutputTypingEvent), Receipts: e.topic(receiptapi.TopicOutputReceiptEvent),
			ToDevice: e.topic(eduapi.TopicOutputSendToDeviceEvent), Presence: e.topic(presenceapi.TopicOutputPresenceEvent), NotificationCounts: e.topic(pushapi.TopicOutputNotificationData)},
		Presence:      e.presenceInput(nil),
		RoomserverAPI: e.roomserver, Backfill: e.keys, Keys: e.users, Erasure: e.users, UserReplay: e.users, EDUReplay: e.edu, ReceiptReplay: e.receipts, PushReplay: e.push, PresenceReplay: e.presence, DeviceLookup: routing.GuestDeviceLookup(e.users), FilterLookup: filterLookup(e.users),
		Logger: e.component("syncapi"), Registerer: e.registry, CacheBudget: caching.Budget(e.cfg.Global.Cache.MaxBytes),
	})
	if err != nil {
		return nil, err
	}
	return &built{routes: s.Routes(), run: s.Run, peeks: s.API(),
		serve: func(r *mux.Router, opts ihttp.ServerOptions) { syncinthttp.Register(r, s.API(), opts) }}, nil
}

// federationClient is the process's outbound federation client, shared by the components
// that talk to other servers. Making it logs the warning for disable_tls_validation.
func (e *env) federationClient() *fedclient.Client {
	if e.fedClient == nil {
		fc := e.cfg.FederationAPI
		e.fedClient = fedclient.New(fedclient.Options{
			ServerName: e.serverName, KeyID: e.keyID, PrivateKey: e.key, SkipVerify: fc.DisableTLSValidation, Deny: e.outbound,
			Timeout: time.Duration(fc.RequestTimeout), Logger: e.component("federation"),
		})
	}
	return e.fedClient
}

func buildFederationAPI(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("federationapi", e.cfg.FederationAPI.Database)
	if err != nil {
		return nil, err
	}
	d := federationapi.Deps{
		Cfg: &e.cfg.FederationAPI, ServerName: e.serverName, KeyID: e.keyID, PrivateKey: e.key, DB: db,
		Client: e.federationClient(), Federation: e.federationClient(), Users: e.users, Logger: e.component("federationapi"), Registerer: e.registry,
		Roomserver: e.clientRoomserver(), IdentityServers: e.identityServers(),
		EDU: e.eduInput(), Receipts: e.receiptInput(nil), Sender: e.sender,
		DeviceLists: &uapi.DeviceListProducer{Log: e.log, Topic: e.topic(uapi.TopicInputDeviceListUpdate)},
	}
	if e.cfg.FederationAPI.ReceivePresence {
		d.Presence = e.presenceInput(nil)
	}
	f, err := federationapi.New(ctx, d)
	if err != nil {
		return nil, err
	}
	return &built{
		fedRoutes: f.Routes(),
		serve:     func(r *mux.Router, opts ihttp.ServerOptions) { finthttp.Register(r, f.API(), opts) },
		keys:      f.API(),
	}, nil
}

func buildFederationSender(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("federationsender", e.cfg.FederationSender.Database)
	if err != nil {
		return nil, err
	}
	s, err := federationsender.New(ctx, federationsender.Deps{
		Cfg: &e.cfg.FederationSender, ServerName: e.serverName, DB: db, Log: e.log, LogMetrics: e.logMetrics,
		Topics: federationsender.TopicsWithPrefix(e.cfg.Global.Log.TopicPrefix), Rooms: e.roomserver, Presence: e.presence, UserReplay: e.users, EDUReplay: e.edu, ReceiptReplay: e.receipts, PresenceReplay: e.presence,
		Client:         e.federationClient(),
		RequestTimeout: time.Duration(e.cfg.FederationAPI.RequestTimeout), Logger: e.component("federationsender"), Registerer: e.registry,
	})
	if err != nil {
		return nil, err
	}
	return &built{
		run:    s.Run,
		serve:  func(r *mux.Router, opts ihttp.ServerOptions) { fsinthttp.Register(r, s.API(), opts) },
		sender: s.API(),
	}, nil
}

func buildAppService(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("appservice", e.cfg.AppServiceAPI.Database)
	if err != nil {
		return nil, err
	}
	a, err := appservice.New(ctx, appservice.Deps{
		Cfg: &e.cfg.AppServiceAPI, ServerName: e.serverName, DB: db, Log: e.log, LogMetrics: e.logMetrics,
		RoomEventsTopic: e.topic(rsapi.TopicOutputRoomEvent), TypingTopic: e.topic(eduapi.TopicOutputTypingEvent),
		ReceiptsTopic: e.topic(receiptapi.TopicOutputReceiptEvent), PresenceTopic: e.topic(presenceapi.TopicOutputPresenceEvent),
		ToDeviceTopic: e.topic(eduapi.TopicOutputSendToDeviceEvent), Rooms: e.roomserver, Replay: e.roomserver, EDUReplay: e.edu, ReceiptReplay: e.receipts, PresenceReplay: e.presence, Retention: time.Duration(e.cfg.Global.Log.Retention),
		SkipTLSVerify: e.cfg.FederationAPI.DisableTLSValidation, Logger: e.component("appservice"), Registerer: e.registry,
	})
	if err != nil {
		return nil, err
	}
	return &built{
		run:         a.Run,
		serve:       func(r *mux.Router, opts ihttp.ServerOptions) { asinthttp.Register(r, a.API(), opts) },
		appServices: a.API(),
	}, nil
}

// buildPushServer builds the pushserver on its own database: the push reader, delivery to
// push gateways, and /notifications and /pushers.
func buildPushServer(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("pushserver", e.cfg.PushServer.Database)
	if err != nil {
		return nil, err
	}
	// A deployment that trusts no federation certificate (test harnesses such as sytest,
	// whose push gateway serves its own test certificate) trusts none from gateways either.
	cfg := e.cfg.PushServer
	cfg.DisableTLSValidation = cfg.DisableTLSValidation || e.cfg.FederationAPI.DisableTLSValidation
	s, err := pushserver.New(ctx, pushserver.Deps{Cfg: &cfg, ServerName: string(e.serverName), DB: db, Log: e.log,
		LogMetrics: e.logMetrics, Topics: pushserver.Topics{RoomEvents: e.topic(rsapi.TopicOutputRoomEvent),
			ClientData: e.topic(uapi.TopicOutputClientData), Receipts: e.topic(receiptapi.TopicOutputReceiptEvent),
			KeyChanges: e.topic(uapi.TopicOutputKeyChangeEvent), Notifications: e.topic(pushapi.TopicOutputNotificationData)},
		Rooms: e.roomserver, Replay: e.roomserver, UserReplay: e.users, ReceiptReplay: e.receipts, Deny: e.outbound, DeviceLookup: routing.DeviceLookup(e.users),
		Logger: e.component("pushserver"), Registerer: e.registry, CacheBudget: caching.Budget(e.cfg.Global.Cache.MaxBytes)})
	if err != nil {
		return nil, err
	}
	return &built{routes: s.Routes(), run: s.Run, push: s.API(),
		serve: func(r *mux.Router, opts ihttp.ServerOptions) { pushinthttp.Register(r, s.API(), opts) }}, nil
}

func buildMediaAPI(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("mediaapi", e.cfg.MediaAPI.Database)
	if err != nil {
		return nil, err
	}
	var previewTLS *tls.Config
	if e.cfg.MediaAPI.URLPreview.Enabled && e.cfg.FederationAPI.DisableTLSValidation {
		e.component("mediaapi").Warn("federation_api.disable_tls_validation is on: URL previews do NOT verify TLS certificates either; " +
			"use this only for tests and development")
		previewTLS = &tls.Config{InsecureSkipVerify: true} // nolint: gosec // the operator asked for it, warned above
	}
	m, err := mediaapi.New(ctx, mediaapi.Deps{
		PreviewTLS: previewTLS, CacheBudget: caching.Budget(e.cfg.Global.Cache.MaxBytes),
		Cfg: &e.cfg.MediaAPI, ServerName: e.serverName, DB: db, BasePath: e.cfg.MediaPath(), DeviceLookup: routing.DeviceLookup(e.users),
		Verifier: fapi.KeyRing(e.keys), Federation: e.federationClient(), Deny: e.outbound,
		RequestTimeout: 2 * time.Duration(e.cfg.FederationAPI.RequestTimeout), Logger: e.component("mediaapi"), Registerer: e.registry,
	})
	if err != nil {
		return nil, err
	}
	return &built{mediaRoutes: m.Routes(), fedRoutes: m.FederationRoutes()}, nil
}

func buildSearchAPI(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("searchapi", e.cfg.SearchAPI.Database)
	if err != nil {
		return nil, err
	}
	s, err := searchapi.New(ctx, searchapi.Deps{
		Cfg: &e.cfg.SearchAPI, DB: db, Log: e.log, LogMetrics: e.logMetrics, OutputTopic: e.topic(rsapi.TopicOutputRoomEvent),
		Rooms: e.roomserver, Replay: e.roomserver, DeviceLookup: routing.DeviceLookup(e.users), Logger: e.component("searchapi"), Registerer: e.registry,
	})
	if err != nil {
		return nil, err
	}
	return &built{routes: s.Routes(), run: s.Run}, nil
}

// clientRoomserver is the writers' view of the roomserver: queries and the directory, and
// input through the log with the wait answered by the shard that owns the partition.
type clientRoomserver struct {
	rsapi.QueryAPI
	rsapi.InputAPI
	rsapi.DirectoryAPI
}

func (e *env) clientRoomserver() clientRoomserver {
	return clientRoomserver{QueryAPI: e.roomserver, DirectoryAPI: e.roomserver,
		InputAPI: &rsapi.Input{Log: e.log, Topic: e.topic(rsapi.TopicInputRoomEvent), Wait: e.roomserver,
			Timeout: time.Duration(e.cfg.RoomServer.InputWaitTimeout)}}
}

// identityServers is a client of identity servers (3PIDs, third-party invites): through
// global.deny_networks, certificates unchecked only with federation_api.disable_tls_validation.
func (e *env) identityServers() *identity.Client {
	return identity.New(identity.Options{Deny: e.outbound, SkipVerify: e.cfg.FederationAPI.DisableTLSValidation,
		ServerName: e.serverName, KeyID: e.keyID, Key: e.key})
}

func buildClientAPI(ctx context.Context, e *env) (*built, error) {
	rs := e.clientRoomserver()
	d := clientapi.Deps{Cfg: &e.cfg.ClientAPI, ServerName: e.serverName, KeyID: e.keyID, PrivateKey: e.key, RSAPI: rs, UserAPI: e.users, Federation: e.keys,
		EDU: e.eduInput(), Receipts: e.receiptInput(e.receipts), Presence: e.presenceInput(e.presence), AppServices: &e.cfg.AppServiceAPI, AppServiceQueries: e.appServices,
		IdentityServers: e.identityServers(), Peeks: e.peeks, Placement: &rsapi.Placement{Partitions: e.log.Partitions(e.topic(rsapi.TopicInputRoomEvent)), Rooms: e.roomserver}}
	if d.Presence != nil {
		d.PresenceQuery = e.presence
	}
	return &built{routes: clientapi.New(d).Routes()}, nil
}

// eduInput, receiptInput and presenceInput are the writers' producers for the EDU
// servers' input topics; presenceInput is nil when presence is off. Given a TakenAPI
// (the clientapi's), receiptInput and presenceInput return only once the owner took the
// input, bounded by the owner's input_wait_timeout; without one (the syncapi's presence,
// federated EDUs, which are best effort) once the input is in the log.
func (e *env) eduInput() eduapi.InputAPI {
	return &eduapi.Producer{Log: e.log, TypingTopic: e.topic(eduapi.TopicInputTyping), ToDeviceTopic: e.topic(eduapi.TopicInputSendToDevice),
		Wait: e.edu, Timeout: time.Duration(e.cfg.EDUServer.InputWaitTimeout)}
}

func (e *env) receiptInput(wait receiptapi.TakenAPI) receiptapi.InputAPI {
	return &receiptapi.Producer{Log: e.log, Topic: e.topic(receiptapi.TopicInputReceipt),
		Wait: wait, Timeout: time.Duration(e.cfg.ReceiptServer.InputWaitTimeout)}
}

func (e *env) presenceInput(wait presenceapi.TakenAPI) presenceapi.InputAPI {
	if !e.cfg.PresenceServer.Enabled {
		return nil
	}
	return &presenceapi.Producer{Log: e.log, Topic: e.topic(presenceapi.TopicInputPresence),
		Wait: wait, Timeout: time.Duration(e.cfg.PresenceServer.InputWaitTimeout)}
}

func buildEDUServer(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("eduserver", e.cfg.EDUServer.Database)
	if err != nil {
		return nil, err
	}
	s, err := eduserver.New(ctx, eduserver.Deps{Cfg: &e.cfg.EDUServer, ServerName: string(e.serverName), DB: db, Log: e.log,
		LogMetrics: e.logMetrics, Topics: eduserver.TopicsWithPrefix(e.cfg.Global.Log.TopicPrefix), Devices: e.users,
		Logger: e.component("eduserver")})
	if err != nil {
		return nil, err
	}
	return &built{run: s.Run, edu: s.API(),
		serve: func(r *mux.Router, opts ihttp.ServerOptions) { eduinthttp.Register(r, s.API(), opts) }}, nil
}

func buildReceiptServer(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("receiptserver", e.cfg.ReceiptServer.Database)
	if err != nil {
		return nil, err
	}
	s, err := receiptserver.New(ctx, receiptserver.Deps{Cfg: &e.cfg.ReceiptServer, DB: db, Log: e.log, LogMetrics: e.logMetrics,
		InputTopic: e.topic(receiptapi.TopicInputReceipt), OutputTopic: e.topic(receiptapi.TopicOutputReceiptEvent),
		Logger: e.component("receiptserver")})
	if err != nil {
		return nil, err
	}
	return &built{run: s.Run, receipts: s.API(),
		serve: func(r *mux.Router, opts ihttp.ServerOptions) { receiptinthttp.Register(r, s.API(), opts) }}, nil
}

func buildPresenceServer(ctx context.Context, e *env) (*built, error) {
	db, err := e.open("presenceserver", e.cfg.PresenceServer.Database)
	if err != nil {
		return nil, err
	}
	s, err := presenceserver.New(ctx, presenceserver.Deps{Cfg: &e.cfg.PresenceServer, DB: db, Log: e.log, LogMetrics: e.logMetrics,
		InputTopic: e.topic(presenceapi.TopicInputPresence), OutputTopic: e.topic(presenceapi.TopicOutputPresenceEvent),
		Logger: e.component("presenceserver")})
	if err != nil {
		return nil, err
	}
	return &built{
		run:      s.Run,
		serve:    func(r *mux.Router, opts ihttp.ServerOptions) { presenceinthttp.Register(r, s.API(), opts) },
		presence: s.API(),
	}, nil
}

// filterCacheSize bounds the stored filters syncapi remembers.
const filterCacheSize = 10000

// filterLookup lets syncapi resolve stored filter IDs through the userapi. A stored filter
// never changes (storing another one gives it a new ID), so answers are remembered for the
// life of the process, up to filterCacheSize of them: clients send the same filter ID with
// every /sync.
func filterLookup(u uapi.ClientUserAPI) func(ctx context.Context, localpart, filterID string) ([]byte, error) {
	type key struct{ localpart, filterID string }
	var mu sync.Mutex
	cache := map[key][]byte{}
	return func(ctx context.Context, localpart, filterID string) ([]byte, error) {
		k := key{localpart, filterID}
		mu.Lock()
		f, ok := cache[k]
		mu.Unlock()
		if ok {
			return f, nil
		}
		res, err := u.QueryFilter(ctx, &uapi.QueryFilterRequest{Localpart: localpart, FilterID: filterID})
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if len(cache) >= filterCacheSize {
			clear(cache)
		}
		cache[k] = res.Filter
		return res.Filter, nil
	}
}

// publicRouter serves client routes with the client API's limits, federation routes with
// the federation API's, plus /health and /ready; never /metrics or the profiler (DESIGN 9):
// those are on internal listeners only (operatorRoutes). Anything else is answered as
// httputil.Unmatched says (JSON M_UNRECOGNIZED, CORS).
func publicRouter(e *env, name string, routes, fedRoutes, mediaRoutes []httputil.Route, ready func(context.Context) error) *mux.Router {
	router := mux.NewRouter().UseEncodedPath()
	httputil.Unmatched(router)
	var limiter *httputil.RateLimiter
	rl := e.cfg.ClientAPI.RateLimiting
	if rl.Enabled {
		limiter = httputil.NewRateLimiter(rl.PerSecond, rl.Burst, rl.ExemptUserIDs)
	}
	srv := &httputil.Server{
		Component: name, Logger: e.component("http"),
		Metrics: httputil.NewMetrics(e.registry), MaxBodyBytes: e.cfg.ClientAPI.MaxBodyBytes, RateLimiter: limiter,
	}
	srv.Register(router, routes)
	fed := &httputil.Server{
		Component: name, Logger: e.component("http"), Metrics: srv.Metrics, MaxBodyBytes: e.cfg.FederationAPI.MaxBodyBytes,
	}
	fed.Register(router, fedRoutes)
	media := &httputil.Server{
		Component: name, Logger: e.component("http"), Metrics: srv.Metrics, MaxBodyBytes: e.cfg.MediaAPI.MaxFileSizeBytes, RateLimiter: limiter,
	}
	media.Register(router, mediaRoutes)
	httputil.Health(router, ready)
	return router
}
